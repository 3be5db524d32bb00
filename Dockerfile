# smsfw: the SMPP firewall proxy (and, with another command, the SMSC simulator) on CPU.
#
#   docker build -t smsfw .
#   docker run --rm -p 2775:2775 -p 9100:9100 -v smsfw-data:/var/lib/smsfw smsfw
#   docker run --rm smsfw simulate-smsc --host 0.0.0.0 --port 2776
#
# Pin torch for a reproducible image: --build-arg TORCH_VERSION=2.13.0 (default: newest CPU wheel).
FROM python:3.11-slim

ARG TORCH_VERSION=

# HF_*/TRANSFORMERS_OFFLINE: the model is read from local files only, never from the hub.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf

# CPU-only torch first, from the PyTorch CPU index: `pip install .` then finds its torch
# requirement satisfied and pulls no CUDA wheels (nvidia-*). Own layer: it is the big one.
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --index-url https://download.pytorch.org/whl/cpu "torch${TORCH_VERSION:+==${TORCH_VERSION}}"

WORKDIR /app
# The repository, including the default model in classifier/models/default (see .dockerignore).
COPY . /app

# Then the project. The model is used from /app (config/proxy.docker.yaml names it by absolute
# path), so the copy that package-data put into site-packages is dropped: one copy in the image.
# The build fails if the model is missing, if a CUDA build of torch or any nvidia-* package
# slipped in, or if the container config does not validate.
RUN test -d /app/classifier/models/default \
 || { echo "classifier/models/default is missing: train or fetch the default model first" >&2; exit 1; }
RUN pip install ".[fast]" \
 && rm -rf "$VIRTUAL_ENV"/lib/python3.11/site-packages/classifier/models \
 && rm -rf /app/build /app/*.egg-info \
 && python -c "import torch, sys; sys.exit('CUDA torch in a CPU image' if torch.version.cuda else 0)" \
 && ! pip list --format=freeze | grep -qi '^nvidia-' \
 && smpp-proxy check-config --config /app/config/proxy.docker.yaml

# Non-root; the store and the audit log live on the volume, owned by that user.
RUN groupadd --system --gid 10001 smsfw \
 && useradd --system --uid 10001 --gid smsfw --home-dir /var/lib/smsfw --shell /usr/sbin/nologin smsfw \
 && mkdir -p /var/lib/smsfw \
 && chown smsfw:smsfw /var/lib/smsfw
VOLUME ["/var/lib/smsfw"]
USER smsfw:smsfw

# 2775: SMPP (clients bind here); 9100: /metrics, /healthz, /readyz
EXPOSE 2775 9100

# Liveness of the proxy process (its metrics endpoint). The simulator serves no HTTP:
# docker-compose.yml overrides this check for the smsc service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains in-flight submits and unbinds; SIGHUP reloads clients and policy.
STOPSIGNAL SIGTERM
ENTRYPOINT ["smpp-proxy"]
CMD ["run", "--config", "/app/config/proxy.docker.yaml"]
