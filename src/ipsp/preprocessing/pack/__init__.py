"""``ipsp pack``: a PySpark batch job that turns an image folder into LMDB shards on an object store.

Two Spark stages, planned on the driver in between (``job.py`` runs them; ``inputs.py``
lists and reads the inputs for both):

1. **inspect** (``inspect.py``) - the driver lists the inputs (a local folder, walked
   recursively, or an ``s3://`` prefix) and parses each file name; Spark tasks
   (about 1,000 files each) read each file with a few files of read-ahead in
   threads, hash it as it arrives, and validate it (``validate.check_image``:
   header limits, then the whole stream decoded, at 1/8 scale for JPEG); only
   metadata (size, dimensions, format, sha256) - never the pixels - goes back.
2. **plan** (driver, ``plan.py``) - duplicates (same sha256) are set aside, frames are
   assigned to shards deterministically (camera, then frame order, cut at the
   target size) and the manifest rows are fixed.
3. **write** (``write.py``) - the shards are dealt into one group per core; a task writes its
   shards one after another, reading frames ahead in threads and checking each
   against the sha256 from stage 1, while the previous shard uploads in a
   background thread (``file://``: the shard is built beside its final place
   and moved there, no copy). LMDB values stream in with ``append``, so no shard
   is ever held in memory. A shard already on the store is verified (same keys,
   same value digests) and skipped, or the job stops with a clear error rather
   than overwrite different data.

A re-run over a finished dataset (same options) needs no Spark at all: the
driver hashes every input (threads) against the stored manifest, decodes only
the few files it does not know, and checks every shard against the size and
sha256 that ``pack.json`` recorded (``file://``: hashed in place; ``s3://``: by
size). Only what does not match goes to the Spark stages.

Outputs under the target URI (CONTRACTS.md, section "Packed datasets"):
``shards/<camera_id>/<camera_id>-<nnnn>.lmdb``, ``rejects.jsonl``, ``pack.json``
and, written last so it marks a complete dataset, ``manifest.parquet``.

Why the tasks read the bytes themselves instead of Spark's ``binaryFile``
source: ``binaryFile`` over ``s3://`` needs the s3a connector (hadoop-aws and
the AWS SDK jars), which this deployment does not ship; over a local folder it
silently drops a dangling link (seen with Spark 4.2) and fails the whole task on
an unreadable file, while every input here must end up packed or in the
rejects report. So the driver lists with the storage module (cheap: names and
sizes), and the executors read with it, turning a read error into an
``unreadable`` reject. Local folders must be visible to the executors at the same
path, as with ``binaryFile`` over ``file://``.
"""
