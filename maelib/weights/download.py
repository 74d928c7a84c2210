"""Fetching released weights once into torch's hub cache, checked against their published checksums.

    path = download_checkpoint("https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth")
    path = download_checkpoint(url, md5="b8b06e")   # the official README publishes md5 prefixes

Files land in `torch.hub.get_dir()/checkpoints/` (``$TORCH_HOME``, default ~/.cache/torch), where timm and
torchvision keep theirs; a file already there is not fetched again. `file://` URLs work too (tests use them).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex md5 of a file, read in chunks (the official MAE files are 0.3-2.5 GB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_checkpoint_path(url: str) -> Path:
    """Where `download_checkpoint(url)` keeps the file: torch's hub cache, under the URL's file name."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"cannot name a cached file after {url!r}: the URL has no file name")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def download_checkpoint(url: str, md5: str | None = None, *, progress: bool = True) -> Path:
    """The local path of `url`'s file, downloaded into torch's hub cache the first time.

    md5: the published checksum (or its first hex digits, as the official README gives them). A fresh download
    whose md5 does not start with it is deleted and refused with an error; nothing half-written is left in the
    cache (torch writes to a temporary file and renames it when complete).
    """
    dst = hub_checkpoint_path(url)
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=progress)
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(
            f"could not download {url} ({e}). It needs internet access; offline, download the file elsewhere and "
            f"put it at {dst}, or load it from a local path with maelib.load_official(path, arch)") from e
    if md5:
        actual = file_md5(dst)
        if not actual.startswith(md5.lower()):
            dst.unlink()
            raise ValueError(
                f"the file downloaded from {url} has md5 {actual}, but the published checksum starts with {md5}: it "
                "is corrupt or not the released file, so it was deleted. Try again; if it fails the same way, the "
                "file on the server has changed: download it by hand and load it with maelib.load_official")
    return dst
