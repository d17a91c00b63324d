# Packrat's image: `docker build -t packrat .`, then
#   docker run -p 8080:8080 -p 8082:8082 -v packrat-cache:/var/cache/packrat packrat resnet50
# Runs as a non-root user; profiles, converted models and shared weights are cached on the
# volume at /var/cache/packrat, so a restarted container skips first-start profiling.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PACKRAT_CACHE_DIR=/var/cache/packrat

# torch's CPU build first: PyPI's default torch wheel pulls a CUDA build of several GB.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/packrat
COPY pyproject.toml README.md ./
COPY src ./src
# The base install holds the fast backends (ONNX Runtime, OpenVINO).
RUN pip install . && rm -rf /opt/packrat/src

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin packrat \
    && mkdir -p /var/cache/packrat /models \
    && chown packrat:packrat /var/cache/packrat
VOLUME /var/cache/packrat
USER 10001
WORKDIR /models

# inference (TorchServe and v2 routes), management (kept on 127.0.0.1), metrics
EXPOSE 8080 8082
ENTRYPOINT ["packrat", "serve", "--host", "0.0.0.0"]
CMD ["resnet50"]
