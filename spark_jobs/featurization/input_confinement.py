"""Confinement of the featurize job's inputs: the image root, or every manifest entry, must lie
under an --allowed-prefix, compared as Hadoop reads the paths ('..' segments never pass)."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession

from spark_jobs import hadoop_fs
from spark_jobs.contract.s3_uri import S3_SCHEMES
from spark_jobs.featurization.input_errors import InputError

SHOWN_OUTSIDE = 5


def normalise_uri(uri: str, qualify: Callable[[str], str]) -> str:
    """scheme://authority/path of an input as Hadoop reads it, to compare with a prefix.

    Plain paths go through `qualify` (the default filesystem: file: locally); s3a/s3n become
    s3; '.' segments and repeated slashes go. A '..' segment is a ValueError: Hadoop resolves
    it, so raw/../other/x.jpg reads other/x.jpg.
    """
    parts = hadoop_fs.URI_PARTS.match(uri) or hadoop_fs.URI_PARTS.match(qualify(uri))
    scheme, authority, path = parts["scheme"].lower(), (parts["authority"] or "").lower(), parts["path"]
    segments = path.split("/")
    if ".." in segments:
        raise ValueError(f"{uri} has a '..' segment")
    if scheme in S3_SCHEMES:
        scheme = "s3"
    return f"{scheme}://{authority}/" + "/".join(s for s in segments if s not in ("", "."))


def as_folder(uri: str) -> str:
    """With a trailing slash, so that raw/ never admits raw-other/."""
    return uri if uri.endswith("/") else uri + "/"


def hadoop_qualifier(spark: SparkSession) -> Callable[[str], str]:
    """Plain path -> URI on the default filesystem, with two Hadoop calls whatever the count."""
    bases: dict[str, str] = {}

    def qualify(path: str) -> str:
        base = "/" if path.startswith("/") else "."  # "." = the working directory
        if base not in bases:
            bases[base] = hadoop_fs.qualify(spark, base).rstrip("/")
        return f"{bases[base]}/{path.lstrip('/')}"

    return qualify


def allowed_folders(allowed: list[str], qualify: Callable[[str], str]) -> list[str]:
    """The --allowed-prefix values, normalised, each as a folder."""
    folders = []
    for prefix in allowed:
        if not prefix.strip():
            raise InputError("--allowed-prefix is empty: give a folder such as s3://bucket/raw/")
        try:
            folders.append(as_folder(normalise_uri(prefix.strip(), qualify)))
        except ValueError:
            raise InputError(f"--allowed-prefix {prefix} has a '..' segment: give the folder itself") from None
    return folders


def confine_inputs(
    spark: SparkSession,
    allowed: list[str],
    images: str | None = None,
    manifest: str | None = None,
    manifest_entries: list[str] | None = None,
) -> None:
    """InputError unless the image root, or every manifest entry, lies under an allowed prefix."""
    qualify = hadoop_qualifier(spark)
    prefixes = tuple(allowed_folders(allowed, qualify))
    shown_prefixes = ", ".join(prefixes)

    def inside(uri: str, folder: bool = False) -> bool:
        try:
            normal = normalise_uri(uri, qualify)
        except ValueError:
            return False
        return (as_folder(normal) if folder else normal).startswith(prefixes)

    if images is not None and not inside(images, folder=True):
        raise InputError(
            f"image root {images} is not under --allowed-prefix {shown_prefixes}"
            " ('..' segments are never allowed): point --images at a folder under an allowed prefix;"
            " no image was read, nothing was written"
        )
    outside = [entry for entry in manifest_entries or [] if not inside(entry)]
    if outside:
        shown = ", ".join(outside[:SHOWN_OUTSIDE])
        more = f" and {len(outside) - SHOWN_OUTSIDE} more" if len(outside) > SHOWN_OUTSIDE else ""
        raise InputError(
            f"manifest {manifest}: {len(outside)} of {len(manifest_entries)} entries are not under"
            f" --allowed-prefix {shown_prefixes}: {shown}{more} ('..' segments are never allowed)."
            " Fix the manifest so that it lists only images under an allowed prefix;"
            " no image was read, nothing was written"
        )
