#!/bin/sh
# MinIO setup, safe to run again: the bucket of IPSP_STORAGE_URI, and an application user
# (IPSP_S3_ACCESS_KEY / IPSP_S3_SECRET_KEY) limited to that bucket, so no ipsp process holds
# the root credentials. Plain sh with no sed/grep: the mc image is minimal.
set -eu

bucket=${IPSP_STORAGE_URI#s3://}
bucket=${bucket%%/*}
export MC_CONFIG_DIR=/tmp/mc

echo "waiting for MinIO at $IPSP_S3_ENDPOINT"
until mc alias set ipsp "$IPSP_S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" > /dev/null 2>&1; do
  sleep 3
done

mc mb --ignore-existing "ipsp/$bucket"

cat > /tmp/app-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$bucket"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$bucket/*"]
    }
  ]
}
POLICY
mc admin policy create ipsp ipsp-app /tmp/app-policy.json

# `user add` on an existing user resets its secret: that is how a rotated key takes effect
mc admin user add ipsp "$IPSP_S3_ACCESS_KEY" "$IPSP_S3_SECRET_KEY"
info=$(mc --json admin user info ipsp "$IPSP_S3_ACCESS_KEY")
case "$info" in
  *'"ipsp-app"'*) echo "policy ipsp-app already attached" ;;
  *) mc admin policy attach ipsp ipsp-app --user "$IPSP_S3_ACCESS_KEY" ;;
esac
echo "bucket $bucket ready; user $IPSP_S3_ACCESS_KEY has policy ipsp-app"
