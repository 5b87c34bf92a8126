"""A cached pool of throwaway member keys for the benchmarks (never in the repository).

Member i has the user id "Member i <mNNNNN@members.example.net>". Every fourth member
(i % 4 == 3) has an RSA-3072 primary key with an RSA-3072 encryption subkey; the others an
Ed25519 primary key with a Curve25519 encryption subkey. Any prefix of the pool therefore
holds the same mix (1 in 4 RSA), so 100, 1,000 and 10,000 members come from one pool.

Keys are made by gpg in shards of SHARD members, one gpg process (and agent) per shard, as
many shards at a time as there are cores. Each finished shard is kept as an exported binary
public keyring plus a JSON index (fingerprints in order); shard 0 also keeps its secret keys,
so that a few copies can be decrypted to check them. An interrupted run resumes where it
stopped. Generating 10,000 keys took 26 minutes on 2 busy cores (RSA-3072 dominates, ~0.6 s a
key); later runs read the cache in well under a second.

Cache: $LISTSERV_BENCH_CACHE, else ~/.cache/listserv-bench.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SHARD = 100
RSA_EVERY = 4  # member i is RSA-3072 when i % RSA_EVERY == RSA_EVERY - 1
GPG = ["gpg", "--batch", "--no-tty", "--quiet"]


def cache_dir() -> Path:
    root = Path(os.environ.get("LISTSERV_BENCH_CACHE") or Path.home() / ".cache" / "listserv-bench")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


@dataclass(frozen=True)
class PoolKey:
    index: int
    email: str
    kind: str  # "cv25519" or "rsa3072"
    fingerprint: str


def kind_of(index: int) -> str:
    return "rsa3072" if index % RSA_EVERY == RSA_EVERY - 1 else "cv25519"


def email_of(index: int) -> str:
    return f"m{index:05d}@members.example.net"


def _parameters(start: int, count: int) -> bytes:
    lines = ["%no-protection"]
    for index in range(start, start + count):
        if kind_of(index) == "rsa3072":
            lines += ["Key-Type: RSA", "Key-Length: 3072", "Key-Usage: sign",
                      "Subkey-Type: RSA", "Subkey-Length: 3072", "Subkey-Usage: encrypt"]
        else:
            lines += ["Key-Type: EDDSA", "Key-Curve: ed25519", "Key-Usage: sign",
                      "Subkey-Type: ECDH", "Subkey-Curve: cv25519", "Subkey-Usage: encrypt"]
        lines += [f"Name-Real: Member {index}", f"Name-Email: {email_of(index)}",
                  "Expire-Date: 0", "%commit"]
    return ("\n".join(lines) + "\n").encode()


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent this script started for `home` (by its home, not by name)."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


def _paths(root: Path, shard: int) -> tuple[Path, Path, Path]:
    pool = root / "pool"
    return pool / f"shard-{shard:03d}.pgp", pool / f"shard-{shard:03d}.json", pool / f"secret-{shard:03d}.pgp"


def _make_shard(root: Path, shard: int) -> None:
    public, index_file, secret = _paths(root, shard)
    start = shard * SHARD
    scratch = Path(tempfile.mkdtemp(prefix=f"kg{shard}-", dir="/tmp"))  # short: agent socket paths
    try:
        scratch.chmod(0o700)
        done = subprocess.run([*GPG, "--homedir", str(scratch), "--status-fd", "2", "--gen-key"],
                              input=_parameters(start, SHARD), capture_output=True)
        created = [line.split()[-1] for line in done.stderr.decode().splitlines()
                   if line.startswith("[GNUPG:] KEY_CREATED ")]
        if done.returncode != 0 or len(created) != SHARD:
            raise RuntimeError(f"gpg made {len(created)} of {SHARD} keys in shard {shard}: "
                               f"{done.stderr.decode()[-400:]}")
        exported = subprocess.run([*GPG, "--homedir", str(scratch), "--export", *created],
                                  capture_output=True, check=True).stdout
        if shard == 0:
            secrets_ = subprocess.run([*GPG, "--homedir", str(scratch), "--export-secret-keys", *created],
                                      capture_output=True, check=True).stdout
            _write(secret, secrets_)
        entries = [{"index": start + n, "email": email_of(start + n), "kind": kind_of(start + n),
                    "fingerprint": fpr} for n, fpr in enumerate(created)]
        _write(public, exported)
        _write(index_file, json.dumps(entries).encode())  # written last: marks the shard done
    finally:
        kill_agent(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure(count: int, root: Path | None = None, log=print) -> list[PoolKey]:
    """The first `count` pool keys, generating (in parallel, once) whatever is missing."""
    root = root or cache_dir()
    (root / "pool").mkdir(exist_ok=True)
    shards = range((count + SHARD - 1) // SHARD)
    missing = [s for s in shards if not _paths(root, s)[1].exists()]
    if missing:
        workers = os.cpu_count() or 1
        log(f"generating {len(missing) * SHARD} member keys in {len(missing)} shards on {workers} "
            f"cores (cached in {root / 'pool'}; RSA-3072 takes ~0.6 s a key) ...")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for n, _ in enumerate(pool.map(lambda s: _make_shard(root, s), missing), 1):
                if n % 10 == 0 or n == len(missing):
                    log(f"  {n}/{len(missing)} shards, {time.perf_counter() - started:.0f} s")
    keys: list[PoolKey] = []
    for shard in shards:
        keys += [PoolKey(**entry) for entry in json.loads(_paths(root, shard)[1].read_bytes())]
    return keys[:count]


def public_keyring(count: int, root: Path | None = None) -> bytes:
    """The first `count` members' public keys as one binary keyring (what `member import` reads)."""
    root = root or cache_dir()
    ensure(count, root)
    full, rest = divmod(count, SHARD)
    data = b"".join(_paths(root, shard)[0].read_bytes() for shard in range(full))
    if rest:
        data += _first_keys(_paths(root, full)[0].read_bytes(), rest)
    return data


def _first_keys(data: bytes, count: int) -> bytes:
    from listserv import openpgp  # packet framing only
    out, seen = [], 0
    for packet in openpgp.parse(data):
        if packet.tag == 6:  # a public-key packet starts the next certificate
            seen += 1
            if seen > count:
                break
        out.append(packet.raw)
    return b"".join(out)


def secret_keyring(root: Path | None = None) -> bytes:
    """The secret keys of members 0..SHARD-1 (for checking that copies decrypt)."""
    root = root or cache_dir()
    ensure(SHARD, root)
    return _paths(root, 0)[2].read_bytes()


if __name__ == "__main__":
    wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    pool = ensure(wanted)
    print(f"{len(pool)} keys ready: {sum(k.kind == 'rsa3072' for k in pool)} RSA-3072, "
          f"{sum(k.kind == 'cv25519' for k in pool)} Curve25519")
