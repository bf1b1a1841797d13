# Stand-in for python:3.11-slim-bookworm (docker/Dockerfile's base) where no registry is reachable:
# a debootstrap'd Debian bookworm with CPython built from source in /usr/local, as in the official
# image. Debian's own python3.11 (3.11.2) is too old for the project's pins (soupsieve needs
# 3.11.5), and python.org is out of reach, so the CPython is the one running the tests (its
# interpreter, shared library and standard library, no site-packages: the build context's python/).
# The CA bundle pip is configured with on the machine (`pip config list`) is the context's
# ca-bundle.pem: every image built on this one (the project's, the moto stand-in) reaches PyPI and
# Maven Central through it, without the project's Dockerfile knowing.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}
ENV LANG=C.UTF-8 \
    PIP_CERT=/usr/local/share/fruits-standin/ca-bundle.pem \
    SSL_CERT_FILE=/usr/local/share/fruits-standin/ca-bundle.pem \
    REQUESTS_CA_BUNDLE=/usr/local/share/fruits-standin/ca-bundle.pem
# The shared libraries CPython's extension modules link (the official image's runtime set).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates netbase tzdata libbz2-1.0 libexpat1 libffi8 libgdbm6 liblzma5 libncursesw6 \
        libreadline8 libsqlite3-0 libssl3 libuuid1 zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY ca-bundle.pem /usr/local/share/fruits-standin/ca-bundle.pem
COPY python/ /usr/local/
RUN ldconfig \
    && ln -s python3.11 /usr/local/bin/python3 \
    && ln -s python3.11 /usr/local/bin/python \
    && python3 -c "import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv, ensurepip, uuid, readline; print(ssl.OPENSSL_VERSION)"
CMD ["python3"]
