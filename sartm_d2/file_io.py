"""Weights files and atomic writes.

- :func:`resolve_weights` is the one place where a weights key (``MODEL.SAM2.CHECKPOINT``,
  ``MODEL.SARTM.DISTILL.CLIP_WEIGHTS``) becomes a local file. A path is returned as it is (nothing
  is downloaded); an ``http(s)://`` URL is downloaded once, with a progress bar, into Detectron2's
  PathManager cache (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``), the same cache that
  ``MODEL.WEIGHTS`` URLs go through in detectron2's checkpointer, and checked against the
  publisher's SHA-256 where it is known (:func:`publisher_sha256`).
- :func:`atomic_torch_save`, :func:`atomic_write_text`: a run killed mid-write never leaves a truncated
  checkpoint, cache or rig file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile

import torch

__all__ = [
    "OFFICIAL_SHA256",
    "atomic_torch_save",
    "atomic_write_text",
    "is_url",
    "publisher_sha256",
    "resolve_weights",
    "sha256_file",
]

logger = logging.getLogger(__name__)

URL_PREFIXES = ("http://", "https://")

# SHA-256 of the official SAM2 (072824) and SAM2.1 (092824) checkpoints. Meta publishes none (the
# sam2 repository's checkpoints/download_ckpts.sh lists only the URLs); these are the digests that
# public projects verify when they download these very URLs, e.g. computational-cell-analytics/
# micro-sam (micro_sam/v2/util.py, checked by pooch on download); every independent public source
# found agrees (for some files also the Hugging Face copies in facebook/sam2(.1)-hiera-*). Not
# recomputed here (no download is possible on this project's machines). Other URLs: no check unless
# the URL names the hash (CLIP, see publisher_sha256).
_SAM2_SHA256 = {
    "072824/sam2_hiera_tiny.pt": "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
    "072824/sam2_hiera_small.pt": "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
    "072824/sam2_hiera_base_plus.pt": "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
    "072824/sam2_hiera_large.pt": "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
    "092824/sam2.1_hiera_tiny.pt": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
    "092824/sam2.1_hiera_small.pt": "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
    "092824/sam2.1_hiera_base_plus.pt": "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    "092824/sam2.1_hiera_large.pt": "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
}
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/"
OFFICIAL_SHA256 = {SAM2_URL + name: sha for name, sha in _SAM2_SHA256.items()}
_HEX64 = re.compile(r"[0-9a-f]{64}")
# local path -> (size, mtime_ns, SHA-256) of a file checked in this process: each file is hashed once.
_VERIFIED: dict[str, tuple[int, int, str]] = {}


def is_url(path: str) -> bool:
    """Whether a weights key holds an http(s) URL (downloaded) rather than a local path (read as is)."""
    return isinstance(path, str) and path.lower().startswith(URL_PREFIXES)


def publisher_sha256(url: str) -> str | None:
    """The SHA-256 the file at ``url`` must have, or None where no publisher's hash is known.

    From :data:`OFFICIAL_SHA256`, or from the URL itself: OpenAI CLIP names each file by its hash
    (``.../clip/models/<sha256>/ViT-B-32.pt``, what ``clip._download`` checks), so a URL whose folder
    just above the file is 64 hex digits is checked against that folder name.
    """
    if url in OFFICIAL_SHA256:
        return OFFICIAL_SHA256[url]
    parts = url.split("?", 1)[0].split("/")
    if len(parts) >= 2 and _HEX64.fullmatch(parts[-2].lower()):
        return parts[-2].lower()
    return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (weights files are up to a few GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class _NoFailureLog(logging.Filter):
    """Drops iopath's own "Failed to download" line: the error raised below says it, with the fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to download")


def _download(url: str, key: str, local_dir: str, cache_dir: str | None) -> str:
    from detectron2.utils.file_io import PathManager

    iopath_logger, quiet = logging.getLogger("iopath.common.download"), _NoFailureLog()
    iopath_logger.addFilter(quiet)
    try:
        return PathManager.get_local_path(url, cache_dir=cache_dir)
    except OSError as e:  # urllib's URLError / HTTPError / ContentTooShortError are OSErrors
        name = url.split("?", 1)[0].rsplit("/", 1)[-1] or "the file"
        raise OSError(
            f"Cannot download {key} = {url!r}: {e}. Without network access, download it on a machine "
            f"that has it (e.g. wget {url}), copy it here, and set {key} to the local file, e.g. "
            f"{os.path.join(local_dir, name)}."
        ) from e
    finally:
        iopath_logger.removeFilter(quiet)


def resolve_weights(
    path_or_url: str,
    *,
    key: str,
    local_dir: str = "weights",
    cache_dir: str | None = None,
    sha256: str | None = None,
) -> str:
    """The local file of a weights key: a path as it is, a URL downloaded once and checked.

    Args:
        path_or_url: the key's value. Anything but an ``http://`` / ``https://`` URL is returned
            unchanged, so local paths behave (and fail) as they always did and nothing is downloaded.
        key: the config key, named in errors (e.g. "MODEL.SAM2.CHECKPOINT").
        local_dir: the folder a user would put the file in, suggested in the no-network error.
        cache_dir: the download cache; None = Detectron2's (``$FVCORE_CACHE``, default
            ``~/.torch/iopath_cache``).
        sha256: the expected hash; None = :func:`publisher_sha256` (no check where none is known).

    Raises:
        OSError: the download failed (no network, HTTP error); names the URL, the key and how to
            use a local file instead.
        ValueError: the file's SHA-256 is not the publisher's: the file is deleted from the cache
            and named in the message with both hashes.
    """
    if not is_url(path_or_url):
        return path_or_url
    url = path_or_url
    local = _download(url, key, local_dir, cache_dir)
    expected = (sha256 or publisher_sha256(url) or "").lower()
    if not expected:
        logger.info("%s: %s (cached as %s; no published SHA-256 to check).", key, url, local)
        return local
    stat = os.stat(local)
    if _VERIFIED.get(local) == (stat.st_size, stat.st_mtime_ns, expected):
        return local
    actual = sha256_file(local)
    if actual != expected:
        os.remove(local)
        _VERIFIED.pop(local, None)
        raise ValueError(
            f"{key} = {url!r}: the downloaded file {local!r} has SHA-256 {actual}, but the publisher's is "
            f"{expected}: it is corrupt or not the published file, and was deleted. Run again to "
            f"download it anew, or download it elsewhere, check it, and set {key} to the local file."
        )
    _VERIFIED[local] = (stat.st_size, stat.st_mtime_ns, expected)
    logger.info("%s: %s (cached as %s; SHA-256 checked).", key, url, local)
    return local


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike, mode: str):
    """An open temporary file in ``path``'s folder, renamed onto ``path`` only when the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and an atomic rename."""
    with _atomic_file(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename (never half a file)."""
    with _atomic_file(path, "w") as f:
        f.write(text)
