# Stand-in for motoserver/moto (docker-compose.yaml's s3 and s3-init): the same moto release from
# PyPI on the Python stand-in, with the official image's entrypoint (moto_server on 0.0.0.0:5000)
# and a `python` that has boto3 (s3-init runs docker/s3_init.py with it).
ARG PYTHON_BASE
FROM ${PYTHON_BASE}
ARG MOTO_VERSION
RUN python3 -m venv /opt/moto \
    && /opt/moto/bin/pip install --no-cache-dir "moto[server]==${MOTO_VERSION}" \
    && ln -s /opt/moto/bin/moto_server /usr/local/bin/moto_server
ENV PATH=/opt/moto/bin:$PATH
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/moto_server", "-H", "0.0.0.0"]
