# llmsim: a vLLM-compatible simulator in a small image, no GPU and no model weights.
#
# The image speaks the vllm/vllm-openai image's interface: its entry point is `vllm serve`,
# so the arguments of a vLLM Deployment or `docker run vllm/vllm-openai ...` work unchanged,
# and the commands `vllm serve ...` and `python3 -m vllm.entrypoints.openai.api_server ...`
# start llmsim too. That `vllm` exists only in this image (deploy/container/), never in the
# llmsim package.
#
#   docker build -t llmsim:0.1.0 .
#   docker run --rm -p 8000:8000 llmsim:0.1.0
#   docker run --rm -p 8000:8000 llmsim:0.1.0 --served-model-name llama --max-num-seqs 64
#   docker run --rm -p 8000:8000 llmsim:0.1.0 serve --lora a,b --inter-token-latency 20ms
#
# Every setting is also an LLMSIM_* variable (docker run -e LLMSIM_MAX_LORAS=2 ...), and a
# TOML profile can be mounted and named with LLMSIM_CONFIG. See docs/deployment.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs, so that editing tests or docs does not rebuild it.
COPY pyproject.toml README.md LICENSE /src/
COPY llmsim /src/llmsim
RUN pip install --no-cache-dir "/src[fast,tls]" \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin llmsim

# vLLM's command names, for this image only: `vllm` on PATH, the `vllm` module on PYTHONPATH.
COPY deploy/container /opt/llmsim/container
ENV PATH=/opt/llmsim/container/bin:$PATH \
    PYTHONPATH=/opt/llmsim/container/python

# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001

# Listen on every interface inside the container (as vLLM does); the port stays 8000 unless
# overridden (--port, LLMSIM_PORT).
ENV LLMSIM_HOST=0.0.0.0 \
    LLMSIM_PORT=8000
EXPOSE 8000

# The slim image has no curl: ask /health (HTTP or HTTPS) with Python's standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "/opt/llmsim/container/healthcheck.py"]

ENTRYPOINT ["vllm", "serve"]
