"""Fan-out cost per member, side by side in one run: baseline, listserv, floor, prototype.

One command, from a fresh install (`pip install -e .` in the repository):

    python bench/fanout.py                      # 100, 1,000 and 10,000 members; 10 KB and 1 MB
    python bench/fanout.py --sizes 100,1000     # a quicker run

The first run generates the member keys (1 in 4 RSA-3072, the rest Curve25519; ~25 minutes
for 10,000 on 2 cores, once) and one GnuPG home per list size holding the list's key and the
members' public keys; both are cached in ~/.cache/listserv-bench ($LISTSERV_BENCH_CACHE),
never in the repository. Later runs take a few minutes. Run by hand, never in CI.

For each list size and post size it prints ms per member for:

  baseline   one gpg sign+encrypt (armored) per member, as list managers that call gpg
             per recipient do; sampled (evenly spaced members) above --baseline-10k/--baseline-1m
  listserv   listserv.stages.fanout.encrypt_for() plus armored_copy() for every member
  floor      the raw public-key work per member in Python (`cryptography`): X25519 ECDH +
             SHA-256 KDF + AES key wrap, or RSA-3072 PKCS #1 v1.5 of the 32-byte session key,
             mixed as the members' keys are (listserv.pkesk.build), single core
  prototype  gpg signs once; Python encrypts once (bench/direct.py) and builds each PKESK from
             the session key (listserv.pkesk), plus every armored copy -- one way the issue asks to measure

and, under "other ways": encrypt_for with batches of N/cores members (every core busy); gpg
with one keybox per shard of --shard-keys members, shards in parallel; and the prototype with
gpg doing the SEIPD too (sign+encrypt to the list's own key, --show-session-key, then Python
builds the members' PKESKs from that session key).

and the ratios baseline/listserv, listserv/floor and the flatness (ms/member at the largest
size / at the smallest). Copies of both listserv and the prototype are decrypted and verified
with gpg, sq and rnp for one Curve25519 and one RSA member before anything is timed.
Times are time.perf_counter() wall clock; CPU from resource.getrusage (gpg is a child).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import direct  # noqa: E402
import keypool  # noqa: E402
from common import log, machine, revision  # noqa: E402

from listserv import openpgp, pkesk  # noqa: E402
from listserv.keyring import GPG_OPTIONS, Keyring  # noqa: E402
from listserv.stages import fanout as fanout_stage  # noqa: E402

LIST = "news@example.org"
POSTS = {"10k": 10 * 1024, "1m": 1024 * 1024}
TARGET_BASELINE = {"10k": 25.0, "1m": 100.0}  # listserv at least this many times faster, at 1,000
TARGET_FLOOR = 3.0
TARGET_FLAT = 1.5


# -- the material -------------------------------------------------------------------------------

@dataclass
class ListHome:
    size: int
    home: Path
    keyring: Keyring
    fingerprint: str  # the list key
    members: list[keypool.PoolKey]
    pubring: bytes  # the members' public keys, binary


def list_home(size: int, root: Path) -> ListHome:
    """A GnuPG home laid out like a deployment's keys/: the list key and `size` member keys."""
    members = keypool.ensure(size, root, log)
    pubring = keypool.public_keyring(size, root)
    home = root / "homes" / f"fanout-{size}"
    marker = home / "ready.json"
    if not marker.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True, mode=0o700)
        log(f"importing {size} member keys into {home} ...")
        started = time.perf_counter()
        keyring = Keyring(home)
        fingerprint = keyring.generate_list_key(LIST, "News")
        imported = keyring.import_keys(pubring)
        if len(imported) != size:
            raise SystemExit(f"gpg imported {len(imported)} of {size} keys")
        marker.write_text(json.dumps({"list": fingerprint, "size": size}))
        log(f"  done in {time.perf_counter() - started:.1f} s")
    fingerprint = json.loads(marker.read_text())["list"]
    return ListHome(size, home, Keyring(home), fingerprint, members, pubring)


def make_post(size: int) -> bytes:
    """A composed message of `size` bytes: text (10 KB) or text plus a base64 attachment (1 MB)."""
    rng = random.Random(size)
    vocabulary = ("the list meeting tomorrow source document press union office safe route "
                  "please read forward nobody until confirmed update statement draft").split()
    head = ("From: Member 12 via News <news@example.org>\r\nTo: News <news@example.org>\r\n"
            "Subject: [News] Update\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"=-b\"\r\n\r\n--=-b\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n")
    words, length = [], 0
    text_size = min(size - len(head) - 200, 8 * 1024)
    while length < text_size:
        word = rng.choice(vocabulary)
        words.append(word + ("\r\n" if rng.random() < 0.08 else " "))
        length += len(words[-1])
    text = "".join(words)
    post = head + text + "\r\n"
    if size > 64 * 1024:
        attachment = "\r\n--=-b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        raw = rng.randbytes((size - len(post) - len(attachment) - 20) * 3 // 4)
        encoded = base64.encodebytes(raw).decode().replace("\n", "\r\n")
        post += attachment + encoded
    post += "\r\n--=-b--\r\n"
    return post.encode()[:size] if len(post) > size else post.encode() + b" " * (size - len(post))


# -- the four ways ------------------------------------------------------------------------------

class Clock:
    """Wall time and CPU of this process and of its finished children (gpg)."""

    def __enter__(self) -> "Clock":
        self.wall = time.perf_counter()
        self.me = resource.getrusage(resource.RUSAGE_SELF)
        self.kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_self = me.ru_utime + me.ru_stime - self.me.ru_utime - self.me.ru_stime
        self.cpu_kids = kids.ru_utime + kids.ru_stime - self.kids.ru_utime - self.kids.ru_stime


# The options listserv's fan-out gives gpg (listserv/stages/fanout.py), for the ways built here.
ENCRYPT_OPTIONS = ["--cipher-algo", "AES256", "--no-throw-keyids", "--no-encrypt-to", "--no-include-key-block"]


def sign_args(fingerprint: str) -> list[str]:
    return [*ENCRYPT_OPTIONS, "--local-user", f"{fingerprint}!"]


def key_listing(ring: ListHome, fingerprints: list[str]) -> object:
    """The per-batch usability listing encrypt_for does before each gpg call (one gpg --list-keys)."""
    if hasattr(ring.keyring, "encryption_keys"):
        return ring.keyring.encryption_keys(fingerprints)
    return fanout_stage._inspect(ring.keyring, fingerprints)  # before listserv 62e29eb


def baseline(ring: ListHome, fingerprints: list[str], plaintext: bytes) -> float:
    with Clock() as clock:
        for fingerprint in fingerprints:
            try:
                ring.keyring.sign_and_encrypt(plaintext, [fingerprint], ring.fingerprint,
                                              ["--armor", *ENCRYPT_OPTIONS])
            except Exception as exc:
                raise SystemExit(f"baseline: gpg failed for {fingerprint}: {exc}") from None
    return clock.wall


def listserv_way(ring: ListHome, fingerprints: list[str], plaintext: bytes) -> dict[str, float]:
    with Clock() as encrypting:
        fan = fanout_stage.encrypt_for(ring.keyring, ring.fingerprint, fingerprints, plaintext)
    if fan.unusable or len(fan.pkesks) != len(fingerprints):
        raise SystemExit(f"listserv: {len(fan.unusable)} members unusable")
    with Clock() as armoring:
        octets = sum(len(fanout_stage.armored_copy(fan, fingerprint)) for fingerprint in fingerprints)
    del octets
    return {"encrypt": encrypting.wall, "armor": armoring.wall, "total": encrypting.wall + armoring.wall,
            "cpu_gpg": encrypting.cpu_kids, "cpu_py": encrypting.cpu_self + armoring.cpu_self,
            "batches": len(fan.shared)}


def floor_way(keys: dict[str, pkesk.RecipientKey], fingerprints: list[str]) -> dict[str, float]:
    session_key = os.urandom(32)
    spent = {1: 0.0, 18: 0.0}
    counts = {1: 0, 18: 0}
    for fingerprint in fingerprints:
        key = keys[fingerprint]
        started = time.perf_counter()
        pkesk.build(key, session_key)
        spent[key.algorithm] += time.perf_counter() - started
        counts[key.algorithm] += 1
    return {"total": spent[1] + spent[18],
            "rsa_each": spent[1] / max(1, counts[1]), "cv_each": spent[18] / max(1, counts[18])}


def gpg_sign(ring: ListHome, plaintext: bytes) -> bytes:
    done = subprocess.run(["gpg", "--homedir", str(ring.home), "--batch", "--no-tty", *GPG_OPTIONS,
                           "--sign", "--local-user", f"{ring.fingerprint}!", "--output", "-"],
                          input=plaintext, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"gpg --sign failed: {done.stderr.decode()[-300:]}")
    return done.stdout


def gpg_encrypt_to_list(ring: ListHome, plaintext: bytes) -> tuple[bytes, bytes]:
    """gpg signs and encrypts to the list's own key; the list key then reveals the session key.

    Returns (SEIPD packet, session key): gpg still does all the symmetric encryption and the
    signing, Python only the per-member public-key step."""
    base = ["gpg", "--homedir", str(ring.home), "--batch", "--no-tty", *GPG_OPTIONS]
    done = subprocess.run([*base, *sign_args(ring.fingerprint), "--sign", "--encrypt", "--recipient",
                           ring.fingerprint, "--output", "-"], input=plaintext, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"gpg --sign --encrypt failed: {done.stderr.decode()[-300:]}")
    *_, shared = openpgp.parse(done.stdout)
    shown = subprocess.run([*base, "--status-fd", "2", "--show-session-key", "--decrypt", "--output", "/dev/null"],
                           input=done.stdout, capture_output=True)
    line = next((l for l in shown.stderr.decode().splitlines() if l.startswith("[GNUPG:] SESSION_KEY ")), "")
    algorithm, _, key = line.split()[-1].partition(":") if line else ("", "", "")
    if algorithm != str(pkesk.AES256):
        raise SystemExit(f"gpg did not show an AES-256 session key: {shown.stderr.decode()[-300:]}")
    return shared.raw, bytes.fromhex(key)


def prototype_way(ring: ListHome, keys: dict[str, pkesk.RecipientKey], fingerprints: list[str],
                  plaintext: bytes, gpg_seipd: bool = False) -> tuple[dict[str, float], bytes, dict[str, bytes]]:
    """gpg signs once; the SEIPD by Python (or by gpg, gpg_seipd); every PKESK by Python."""
    with Clock() as encrypting:
        if gpg_seipd:
            shared, session_key = gpg_encrypt_to_list(ring, plaintext)
        else:
            session_key = os.urandom(32)
            shared = direct.seipd(session_key, gpg_sign(ring, plaintext))
        pkesks = {fingerprint: pkesk.build(keys[fingerprint], session_key) for fingerprint in fingerprints}
    with Clock() as armoring:
        armor = openpgp.SharedArmor(shared)
        octets = sum(len(armor.armor(pkesks[fingerprint])) for fingerprint in fingerprints)
    del octets
    return ({"encrypt": encrypting.wall, "armor": armoring.wall, "total": encrypting.wall + armoring.wall},
            shared, pkesks)


def listserv_parallel_way(ring: ListHome, fingerprints: list[str], plaintext: bytes) -> dict[str, float]:
    """encrypt_for with batches of N/cores members, so that every core runs one gpg."""
    size = -(-len(fingerprints) // (os.cpu_count() or 1))
    with Clock() as clock:
        fan = fanout_stage.encrypt_for(ring.keyring, ring.fingerprint, fingerprints, plaintext, batch_size=size)
        for fingerprint in fingerprints:
            fanout_stage.armored_copy(fan, fingerprint)
    return {"total": clock.wall}


SHARD_KEYS = 1000


def shard_keyrings(ring: ListHome) -> list[tuple[Path, list[str]]]:
    """Keyboxes of SHARD_KEYS members each (plus the list's public key), made once and cached."""
    folder = ring.home / f"shards-{SHARD_KEYS}"
    fingerprints = [member.fingerprint for member in ring.members]
    chunks = [fingerprints[i:i + SHARD_KEYS] for i in range(0, len(fingerprints), SHARD_KEYS)]
    paths = [folder / f"shard-{k}.kbx" for k in range(len(chunks))]
    if not (folder / "ready").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
        for path, chunk in zip(paths, chunks):
            data = subprocess.run(["gpg", "--homedir", str(ring.home), "--batch", "--export", ring.fingerprint,
                                   *chunk], capture_output=True, check=True).stdout
            subprocess.run(["gpg", "--homedir", str(ring.home), "--batch", "--no-default-keyring",
                            "--keyring", str(path), "--import-options", "import-clean,self-sigs-only",
                            "--import"], input=data, capture_output=True, check=True)
        (folder / "ready").touch()
    return list(zip(paths, chunks))


def sharded_way(ring: ListHome, shards: list[tuple[Path, list[str]]], plaintext: bytes) -> dict[str, float]:
    """One gpg per keyring shard, all cores busy; then split and armor like listserv does.

    No per-post key listing: a real implementation would keep key usability in a cache
    refreshed when keys change, not list the keys for every post."""
    def one(shard: tuple[Path, list[str]]) -> int:
        path, chunk = shard
        recipients = [arg for fingerprint in chunk for arg in ("--recipient", fingerprint)]
        done = subprocess.run(
            ["gpg", "--homedir", str(ring.home), "--batch", "--no-tty", *GPG_OPTIONS, "--no-default-keyring",
             "--keyring", str(path), *sign_args(ring.fingerprint), "--sign", "--encrypt", *recipients,
             "--output", "-"], input=plaintext, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"gpg (shard) failed: {done.stderr.decode()[-300:]}")
        *pkesks, shared = openpgp.parse(done.stdout)
        armor = openpgp.SharedArmor(shared.raw)
        return sum(len(armor.armor(packet.raw)) for packet in pkesks)

    with Clock() as clock:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(one, shards))
    return {"total": clock.wall}


# -- checking copies with gpg, sq and rnp --------------------------------------------------------

class Readers:
    """Members 0 (Curve25519) and 3 (RSA-3072) with their secret keys in gpg, sq and rnp."""

    def __init__(self, ring: ListHome, root: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="lsb-read-"))
        self.list_fpr = ring.fingerprint
        self.list_cert = self.dir / "list.pgp"
        self.list_cert.write_bytes(ring.keyring.export_public([ring.fingerprint]))
        self.gpg_home = self.dir / "gpg"
        self.gpg_home.mkdir(mode=0o700)
        secrets_ = self.dir / "secrets.pgp"
        secrets_.write_bytes(keypool.secret_keyring(root))
        self._run(["gpg", "--homedir", str(self.gpg_home), "--batch", "--import", str(secrets_), str(self.list_cert)])
        self.members = [m for m in ring.members[:4] if m.index in (0, 3)]
        self.sq_keys, self.rnp_homes = {}, {}
        for member in self.members:
            key = self.dir / f"secret-{member.index}.pgp"
            key.write_bytes(self._run(["gpg", "--homedir", str(self.gpg_home), "--batch",
                                       "--export-secret-keys", member.fingerprint]).stdout)
            self.sq_keys[member.fingerprint] = key
            rnp_home = self.dir / f"rnp-{member.index}"
            rnp_home.mkdir(mode=0o700)
            for path in (key, self.list_cert):
                self._run(["rnpkeys", "--homedir", str(rnp_home), "--import", str(path), "--password", ""])
            self.rnp_homes[member.fingerprint] = rnp_home

    @staticmethod
    def _run(args: list[str], data: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(args, input=data, capture_output=True)
        if check and done.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-400:]}")
        return done

    def check(self, what: str, fingerprint: str, copy: bytes, plaintext: bytes) -> None:
        """`copy` must decrypt to `plaintext`, signed by the list key, in gpg, sq and rnp."""
        done = self._run(["gpg", "--homedir", str(self.gpg_home), "--batch", "--status-fd", "2",
                          "--trust-model", "always", "--decrypt"], copy, check=False)
        valid = [line.split()[-1] for line in done.stderr.decode().splitlines() if "VALIDSIG" in line]
        if done.returncode != 0 or done.stdout != plaintext or valid != [self.list_fpr]:
            raise SystemExit(f"{what}: gpg cannot read the copy for {fingerprint}")
        if shutil.which("sq"):
            done = self._run(["sq", "decrypt", "--recipient-key", str(self.sq_keys[fingerprint]),
                              "--signer-cert", str(self.list_cert)], copy, check=False)
            if done.returncode != 0 or done.stdout != plaintext:
                raise SystemExit(f"{what}: sq cannot read the copy for {fingerprint}: {done.stderr[-300:]}")
        if shutil.which("rnp"):
            source, target = self.dir / "copy.asc", self.dir / "plain.out"
            source.write_bytes(copy)
            target.unlink(missing_ok=True)
            done = self._run(["rnp", "--homedir", str(self.rnp_homes[fingerprint]), "--password", "",
                              "--decrypt", str(source), "--output", str(target)], check=False)
            if done.returncode != 0 or "Signature(s) verified successfully" not in done.stderr.decode() \
                    or target.read_bytes() != plaintext:
                raise SystemExit(f"{what}: rnp cannot read the copy for {fingerprint}")

    def close(self) -> None:
        keypool.kill_agent(self.gpg_home)
        shutil.rmtree(self.dir, ignore_errors=True)


def check_copies(ring: ListHome, keys: dict[str, pkesk.RecipientKey], readers: Readers, plaintext: bytes) -> None:
    wanted = [member.fingerprint for member in readers.members]
    fan = fanout_stage.encrypt_for(ring.keyring, ring.fingerprint, wanted, plaintext)
    _, shared, pkesks = prototype_way(ring, keys, wanted, plaintext)
    _, gpg_shared, gpg_pkesks = prototype_way(ring, keys, wanted, plaintext, gpg_seipd=True)
    for fingerprint in wanted:
        readers.check("listserv", fingerprint, fanout_stage.armored_copy(fan, fingerprint), plaintext)
        readers.check("prototype", fingerprint, openpgp.armor(pkesks[fingerprint] + shared), plaintext)
        readers.check("prototype (gpg SEIPD)", fingerprint, openpgp.armor(gpg_pkesks[fingerprint] + gpg_shared),
                      plaintext)


# -- the run -------------------------------------------------------------------------------------

def spread(items: list[str], count: int) -> list[str]:
    if count >= len(items):
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def measure(ring: ListHome, post: str, repeat: int, cap: int) -> dict[str, object]:
    plaintext = make_post(POSTS[post])
    fingerprints = [member.fingerprint for member in ring.members]
    keys = direct.encryption_keys(ring.pubring)
    n = len(fingerprints)
    shards = shard_keyrings(ring)
    runs: dict[str, list[dict[str, float]]] = {"listserv": [], "floor": [], "prototype": [], "parallel": [],
                                               "sharded": [], "gpgseipd": []}
    for _ in range(repeat):
        runs["listserv"].append(listserv_way(ring, fingerprints, plaintext))
        runs["floor"].append(floor_way(keys, fingerprints))
        runs["prototype"].append(prototype_way(ring, keys, fingerprints, plaintext)[0])
        runs["parallel"].append(listserv_parallel_way(ring, fingerprints, plaintext))
        runs["sharded"].append(sharded_way(ring, shards, plaintext))
        runs["gpgseipd"].append(prototype_way(ring, keys, fingerprints, plaintext, gpg_seipd=True)[0])
    sample = spread(fingerprints, cap)
    base = baseline(ring, sample, plaintext)

    def median(way: str, field: str = "total") -> float:
        return statistics.median(run[field] for run in runs[way])

    ms = lambda seconds, count=n: 1000.0 * seconds / count  # noqa: E731
    inspect_started = time.perf_counter()
    for start in range(0, n, 1000):
        key_listing(ring, fingerprints[start:start + 1000])
    inspect = time.perf_counter() - inspect_started
    return {
        "members": n, "post": post, "sampled": len(sample),
        "baseline": ms(base, len(sample)),
        "listserv": ms(median("listserv")),
        "listserv_encrypt": ms(median("listserv", "encrypt")),
        "listserv_armor": ms(median("listserv", "armor")),
        "listserv_inspect": ms(inspect),
        "listserv_cpu_gpg": ms(median("listserv", "cpu_gpg")),
        "listserv_cpu_py": ms(median("listserv", "cpu_py")),
        "batches": runs["listserv"][0]["batches"],
        "floor": ms(median("floor")),
        "floor_rsa": 1000.0 * median("floor", "rsa_each"),
        "floor_cv": 1000.0 * median("floor", "cv_each"),
        "prototype": ms(median("prototype")),
        "prototype_armor": ms(median("prototype", "armor")),
        "parallel": ms(median("parallel")),
        "sharded": ms(median("sharded")),
        "gpgseipd": ms(median("gpgseipd")),
        "shards": len(shards),
    }


def report(rows: list[dict[str, object]]) -> int:
    print()
    print("ms per member (median of the repeats; baseline once)")
    print(f"{'members':>8} {'post':>5} | {'baseline':>9} {'listserv':>9} {'floor':>7} {'prototype':>9} | "
          f"{'base/ls':>8} {'ls/floor':>8} {'proto/floor':>11} | listserv parts")
    for r in rows:
        sampled = "" if r["sampled"] == r["members"] else f" (baseline sampled: {r['sampled']} members)"
        print(f"{r['members']:>8,} {r['post']:>5} | {r['baseline']:>9.3f} {r['listserv']:>9.3f} "
              f"{r['floor']:>7.3f} {r['prototype']:>9.3f} | {r['baseline'] / r['listserv']:>7.1f}x "
              f"{r['listserv'] / r['floor']:>7.1f}x {r['prototype'] / r['floor']:>10.1f}x | "
              f"encrypt_for {r['listserv_encrypt']:.3f} (key listing {r['listserv_inspect']:.3f}, "
              f"{r['batches']} gpg batches, gpg cpu {r['listserv_cpu_gpg']:.3f}, python cpu "
              f"{r['listserv_cpu_py']:.3f}), armoring {r['listserv_armor']:.3f}{sampled}")
    print()
    print("other ways, ms per member (median), each with every armored copy built")
    print(f"{'members':>8} {'post':>5} | {'listserv, batches of N/cores':>28} {'gpg, keyring shards':>20} "
          f"{'prototype':>9} {'prototype, gpg SEIPD':>20}")
    for r in rows:
        print(f"{r['members']:>8,} {r['post']:>5} | {r['parallel']:>28.3f} {r['sharded']:>20.3f} "
              f"{r['prototype']:>9.3f} {r['gpgseipd']:>20.3f}   ({r['shards']} shard(s) of <= {SHARD_KEYS} keys)")
    print(f"floor per operation: X25519 PKESK {statistics.median(r['floor_cv'] for r in rows):.3f} ms, "
          f"RSA-3072 PKESK {statistics.median(r['floor_rsa'] for r in rows):.3f} ms "
          f"(1 in {keypool.RSA_EVERY} members RSA)")
    misses = 0
    print()
    print("targets")
    sizes = sorted({r["members"] for r in rows})
    for r in rows:
        if r["members"] != 1000:
            continue
        want = TARGET_BASELINE[r["post"]]
        got = r["baseline"] / r["listserv"]
        misses += got < want
        print(f"  1,000 members {r['post']:>3}: listserv {got:6.1f}x faster than the baseline "
              f"(target >= {want:.0f}x)  {'met' if got >= want else 'MISSED'}")
        got = r["listserv"] / r["floor"]
        misses += got > TARGET_FLOOR
        print(f"  1,000 members {r['post']:>3}: listserv {got:6.1f}x the floor "
              f"(target <= {TARGET_FLOOR:.0f}x)  {'met' if got <= TARGET_FLOOR else 'MISSED'}")
    if len(sizes) > 1:
        for post in POSTS:
            ends = [r for r in rows if r["post"] == post and r["members"] in (sizes[0], sizes[-1])]
            if len(ends) == 2:
                small, large = sorted(ends, key=lambda r: r["members"])
                for way in ("listserv", "prototype"):
                    flat = large[way] / small[way]
                    if way == "listserv":
                        misses += flat > TARGET_FLAT
                    print(f"  flatness {post:>3} {way:<9}: {large['members']:,} vs {small['members']:,} members "
                          f"{flat:5.2f}x (target <= {TARGET_FLAT})  "
                          f"{'met' if flat <= TARGET_FLAT else 'MISSED'}{'' if way == 'listserv' else ' (not listserv)'}")
    return misses


def main() -> int:
    global SHARD_KEYS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="list sizes, comma-separated")
    parser.add_argument("--posts", default="10k,1m", help="post sizes: 10k, 1m")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way but the baseline (median)")
    parser.add_argument("--baseline-10k", type=int, default=1000, help="baseline members sampled, 10 KB")
    parser.add_argument("--baseline-1m", type=int, default=200, help="baseline members sampled, 1 MB")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--shard-keys", type=int, default=SHARD_KEYS, help="keys per keyring shard")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.replace("_", "").split(","))
    posts = [p.strip().lower() for p in args.posts.split(",")]
    caps = {"10k": args.baseline_10k, "1m": args.baseline_1m}
    SHARD_KEYS = args.shard_keys
    root = keypool.cache_dir()
    print(f"machine: {machine()}")
    print(revision())
    print(f"keys: 1 in {keypool.RSA_EVERY} members RSA-3072 (RSA-3072 primary + subkey), "
          f"the rest Ed25519 + Curve25519; cache {root}")
    rows = []
    readers = None
    started = time.perf_counter()
    try:
        for size in sizes:
            ring = list_home(size, root)
            if readers is None:
                keys = direct.encryption_keys(ring.pubring)
                readers = Readers(ring, root)
                for post in posts:
                    check_copies(ring, keys, readers, make_post(POSTS[post]))
                log("copies of listserv and of the prototype read by gpg, sq and rnp: ok")
            for post in posts:
                log(f"measuring {size:,} members, {post} post ...")
                row = measure(ring, post, args.repeat, min(size, caps[post]))
                rows.append(row)
                log(f"  baseline {row['baseline']:.3f}  listserv {row['listserv']:.3f}  floor {row['floor']:.3f}"
                    f"  prototype {row['prototype']:.3f} ms/member")
            keypool.kill_agent(ring.home)
    finally:
        if readers:
            readers.close()
    misses = report(rows)
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
