# syntax=docker/dockerfile:1.7
# ipsp-grafana: Grafana with the Infinity datasource plugin baked in.
#   The dashboards read the IPSP REST API through Infinity; the official MongoDB datasource
#   needs a Grafana Enterprise licence. Baking the plugin in (instead of GF_PLUGINS_PREINSTALL)
#   keeps start-up offline: the Grafana pod has no egress to grafana.com.
# Build from the repository root (nothing is copied from the context):
#   docker build -f 1_infrastructure/docker/ipsp-grafana.Dockerfile -t ipsp-grafana:0.1.0 .

ARG GRAFANA_IMAGE=grafana/grafana:12.3.1

# --- 1. Download the pinned plugin into its own folder ---
FROM ${GRAFANA_IMAGE} AS plugins
ARG INFINITY_VERSION=3.11.1
RUN grafana cli --pluginsDir /tmp/plugins plugins install yesoreyeram-infinity-datasource "$INFINITY_VERSION"

# --- 2. Final image: stock Grafana plus the plugin folder ---
FROM ${GRAFANA_IMAGE}
# The plugins live outside /var/lib/grafana so the emptyDir mounted there does not hide them.
COPY --from=plugins /tmp/plugins /opt/grafana-plugins
ENV GF_PATHS_PLUGINS=/opt/grafana-plugins
USER 472:0
