"""Statements in the group's voice (issue 15, part 2): what the list key signs as a statement
verifies with gpg, Sequoia, RNP and `listserv verify`; a changed word, another signer, no
signature, a list-signed copy of a post without the statement notation, an expired or revoked
list key -- each fails, and `listserv verify` says which in one sentence and its own exit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from listserv.errors import UsageError
from listserv.keyring import Keyring, statement
from listserv.stages.statement import normalise as read_normalised

from tests.helpers.cli import Cli
from tests.helpers.keys import GPG_BATCH, User, make_gpg_key, make_gpg_user, revoked, run, secret_key

LIST = "news@example.org"
TEXT = ("We, the members of News, did not write the letter going around under our name.\r\n"
        "- Our statements are signed by the list's key.  \r\n"
        "From now on, check them.\r\n").encode()
NORMALISED = (b"We, the members of News, did not write the letter going around under our name.\n"
              b"- Our statements are signed by the list's key.\n"
              b"From now on, check them.\n")
ATTACHMENT = bytes(range(256)) * 64 + b"\r\nnot text\r\n"


class Site:
    """A home with one list, the list's keyring, and its key, statement and attachment as files."""

    def __init__(self, base: Path):
        self.base = base
        self.cli = Cli(base / "home")
        self.cli.ok("init")
        self.cli.ok("list", "create", LIST, "--name", "News")
        self.fingerprint = json.loads(self.cli.ok("list", "show", LIST, "--json").stdout)["fingerprint"]
        self.keyring = Keyring(self.cli.home / "keys")
        self.key = self.write("news-key.asc", self.cli.ok("list", "key", LIST).stdout.encode())
        self.statement = self.write("statement.asc", self.keyring.clearsign_statement(self.fingerprint, TEXT, LIST))
        self.attachment = self.write("report.bin", ATTACHMENT)
        self.write("report.bin.sig", self.keyring.sign_statement_detached(self.fingerprint, ATTACHMENT, LIST))

    def write(self, name: str, data: bytes) -> Path:
        path = self.base / name
        path.write_bytes(data)
        return path

    def altered(self) -> tuple[Path, Path]:
        """The statement with one word changed, and the attachment with one byte changed (its
        signature beside it)."""
        text = self.statement.read_bytes()
        assert text.count(b"did not write") == 1
        statement_copy = self.write("altered.asc", text.replace(b"did not write", b"did now write"))
        attachment_copy = self.write("altered.bin", ATTACHMENT[:-3] + b"X\r\n")
        self.write("altered.bin.sig", (self.base / "report.bin.sig").read_bytes())
        return statement_copy, attachment_copy


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    made = Site(tmp_path_factory.mktemp("verify-site"))
    yield made
    made.keyring.stop_agent()


def listserv_verify(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`listserv verify ...` as a journalist runs it: no home at all (a folder that is not one)."""
    result = Cli(tmp_path / "no-home-here")("verify", *map(str, args))
    assert not (tmp_path / "no-home-here").exists()
    return result.exit_code, result.stdout, result.stderr


def one_sentence(stderr: str) -> str:
    assert stderr.startswith("listserv: ") and stderr.endswith(".\n") and stderr.count("\n") == 1, repr(stderr)
    assert "Traceback" not in stderr
    return stderr


def gpg_verify(tmp_path: Path, key: Path, *files: Path, show_notations: bool = True) -> subprocess.CompletedProcess:
    """`gpg --verify` as docs/verify.md tells a reader to run it: a fresh home with the list key."""
    home = tmp_path / f"reader-gpg-{len(list(tmp_path.glob('reader-gpg-*')))}"
    home.mkdir(mode=0o700)
    gpg = [*GPG_BATCH, "--homedir", str(home)]
    run([*gpg, "--import", str(key)])
    options = ["--verify-options", "show-notations"] if show_notations else []
    return run([*gpg, "--status-fd", "1", *options, "--verify", *map(str, files)], check=False)


def sq_verify(key: Path, file: Path, signature: Path | None = None) -> subprocess.CompletedProcess:
    detached = ["--detached", str(signature)] if signature else []
    return run(["sq", "verify", "--signer-cert", str(key), *detached, str(file)], check=False)


def rnp_verify(key: Path, file: Path, signature: Path | None = None) -> subprocess.CompletedProcess:
    if signature:
        return run(["rnp", "--keyfile", str(key), "--verify", str(signature), "--source", str(file)], check=False)
    return run(["rnp", "--keyfile", str(key), "--verify", str(file)], check=False)


GOOD = f"signed by the group {LIST} on "


# -- a statement and an attachment verify everywhere; an altered copy nowhere -----------------

def test_the_statement_is_cleartext_signed_with_sha512_and_the_notation(site):
    text = site.statement.read_bytes()
    assert text.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n")
    # The text signed is the text normalised: LF, no trailing blanks; "From " and "-" escaped.
    assert b"\n- - Our statements are signed by the list's key.\n- From now on, check them.\n" in text
    packets = run(["sq", "packet", "dump"], input=text).stdout.decode()
    assert "Type: Text" in packets and "Hash algo: SHA512" in packets
    notations = [line.strip() for line in packets.splitlines() if "Notation:" in line]
    assert notations == [f"Notation: statement@example.org (human readable): {LIST}"], packets
    assert "critical" not in packets.lower()
    signature = (site.base / "report.bin.sig").read_bytes()
    assert signature[0] & 0x80 and b"BEGIN PGP" not in signature  # binary
    detached = run(["gpg", "--list-packets"], input=signature).stdout.decode()
    assert "sigclass 0x00" in detached and "digest algo 10," in detached
    assert f"(notation: statement@example.org={LIST})" in detached


def test_gpg_verifies_both_and_shows_the_notation_only_when_asked(site, tmp_path):
    for files in ([site.statement], [site.base / "report.bin.sig", site.attachment]):
        done = gpg_verify(tmp_path, site.key, *files)
        assert done.returncode == 0, done.stderr
        assert f"[GNUPG:] VALIDSIG {site.fingerprint} ".encode() in done.stdout
        assert f"Signature notation: statement@example.org={LIST}".encode() in done.stderr
        assert b'Good signature from "News <news@example.org>"' in done.stderr
        # What docs/verify.md says of gpg 2.2: user notations are not shown by default.
        plain = gpg_verify(tmp_path, site.key, *files, show_notations=False)
        assert plain.returncode == 0 and b"Good signature" in plain.stderr
        assert b"notation" not in plain.stderr.lower()


def test_gpg_finds_the_altered_copies_bad(site, tmp_path):
    statement_copy, attachment_copy = site.altered()
    for files in ([statement_copy], [attachment_copy.with_name("altered.bin.sig"), attachment_copy]):
        done = gpg_verify(tmp_path, site.key, *files)
        assert done.returncode == 1 and b"[GNUPG:] BADSIG " in done.stdout
        assert b'BAD signature from "News <news@example.org>"' in done.stderr


def test_sequoia_verifies_both_and_finds_the_altered_copies_bad(site):
    done = sq_verify(site.key, site.statement)
    assert done.returncode == 0, done.stderr
    assert done.stdout == NORMALISED  # what sq shows is what was signed
    assert sq_verify(site.key, site.attachment, site.base / "report.bin.sig").returncode == 0
    statement_copy, attachment_copy = site.altered()
    for bad in (sq_verify(site.key, statement_copy),
                sq_verify(site.key, attachment_copy, attachment_copy.with_name("altered.bin.sig"))):
        assert bad.returncode != 0 and b"Message has been manipulated" in bad.stderr


def test_rnp_verifies_both_and_finds_the_altered_copies_bad(site):
    assert rnp_verify(site.key, site.statement).returncode == 0
    assert rnp_verify(site.key, site.attachment, site.base / "report.bin.sig").returncode == 0
    statement_copy, attachment_copy = site.altered()
    assert rnp_verify(site.key, statement_copy).returncode != 0
    assert rnp_verify(site.key, attachment_copy, attachment_copy.with_name("altered.bin.sig")).returncode != 0


def test_listserv_verify_with_the_key_file_alone_needs_no_home(site, tmp_path):
    code, out, err = listserv_verify(tmp_path, site.statement, "--key", site.key)
    assert (code, err) == (0, "") and out.startswith(GOOD) and out.endswith(" UTC\n") and out.count("\n") == 1
    for args in ([site.attachment], [site.base / "report.bin.sig"], [site.attachment, "--signature",
                                                                      site.base / "report.bin.sig"]):
        assert listserv_verify(tmp_path, *args, "--key", site.key)[:2] == (0, out)
    binary_key = site.write("news-key.pgp", run(["gpg", "--dearmor"], input=site.key.read_bytes()).stdout)
    assert listserv_verify(tmp_path, site.statement, "--key", binary_key)[:2] == (0, out)


def test_the_date_is_the_signatures_own(site, tmp_path):
    made = [line for line in gpg_verify(tmp_path, site.key, site.statement).stdout.decode().splitlines()
            if line.startswith("[GNUPG:] VALIDSIG ")][0].split()[4]
    out = listserv_verify(tmp_path, site.statement, "--key", site.key)[1]
    assert out == f"{GOOD}{statement.when(int(made))}\n"


def test_listserv_verify_with_the_list_of_the_home(site):
    done = site.cli("verify", str(site.statement), "--list", "News@Example.org")
    assert done.exit_code == 0 and done.stdout.startswith(GOOD)
    assert site.cli("verify", str(site.attachment), "--list", LIST).exit_code == 0
    missing = site.cli("verify", str(site.statement), "--list", "other@example.org")
    assert missing.exit_code == 3, missing.stderr


def test_listserv_verify_finds_the_altered_copies(site, tmp_path):
    statement_copy, attachment_copy = site.altered()
    for file in (statement_copy, attachment_copy):
        code, out, err = listserv_verify(tmp_path, file, "--key", site.key)
        assert (code, out) == (12, "")
        assert "has been altered since it was signed" in one_sentence(err)
        assert site.cli("verify", str(file), "--list", LIST).exit_code == 12


def test_text_added_around_a_good_statement_is_refused_though_gpg_says_good(site, tmp_path):
    added = site.write("added.asc", b"Also, we endorse the letter.\n\n" + site.statement.read_bytes())
    assert gpg_verify(tmp_path, site.key, added).returncode == 0  # gpg is silent about it
    code, _, err = listserv_verify(tmp_path, added, "--key", site.key)
    assert code == 12 and "text outside its signed part" in one_sentence(err)
    after = site.write("after.asc", site.statement.read_bytes() + b"\nP.S. we lied.\n")
    assert listserv_verify(tmp_path, after, "--key", site.key)[0] == 12
    twice = site.write("twice.asc", site.statement.read_bytes() * 2)
    assert listserv_verify(tmp_path, twice, "--key", site.key)[0] == 12
    blank = site.write("blank.asc", b"\r\n\n" + site.statement.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert listserv_verify(tmp_path, blank, "--key", site.key)[0] == 0  # blank lines, CRLF: a Windows copy


# -- another signer, no signature ----------------------------------------------------------------

@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> User:
    """Someone who made a key with the list's own name and address, and copies the notation."""
    return make_gpg_user(tmp_path_factory.mktemp("impostor"), "News", LIST)


def test_a_statement_signed_by_another_key_fails_everywhere(site, impostor, tmp_path):
    forged = site.write("forged.asc", Keyring(impostor.home).clearsign_statement(impostor.fingerprint, TEXT, LIST))
    done = gpg_verify(tmp_path, site.key, forged)
    assert done.returncode != 0 and b"[GNUPG:] NO_PUBKEY " in done.stdout and b"GOODSIG" not in done.stdout
    assert sq_verify(site.key, forged).returncode != 0
    assert rnp_verify(site.key, forged).returncode != 0
    code, out, err = listserv_verify(tmp_path, forged, "--key", site.key)
    assert (code, out) == (11, "")
    spaced = " ".join(impostor.fingerprint[i:i + 4] for i in range(0, 40, 4))
    assert f"is signed by the key {spaced}, not by the list key in {site.key}." in one_sentence(err)
    assert site.cli("verify", str(forged), "--list", LIST).exit_code == 11


def test_the_readers_own_keyring_plays_no_part(site, impostor, tmp_path, monkeypatch):
    """GNUPGHOME pointing at a keyring holding the impostor's key changes nothing."""
    monkeypatch.setenv("GNUPGHOME", str(impostor.home))
    forged = site.write("forged2.asc", Keyring(impostor.home).clearsign_statement(impostor.fingerprint, TEXT, LIST))
    assert listserv_verify(tmp_path, forged, "--key", site.key)[0] == 11
    assert listserv_verify(tmp_path, site.statement, "--key", site.key)[0] == 0


def test_a_file_without_a_signature_fails(site, tmp_path):
    plain = site.write("plain.txt", NORMALISED)
    assert gpg_verify(tmp_path, site.key, plain).returncode != 0
    assert sq_verify(site.key, plain).returncode != 0
    code, out, err = listserv_verify(tmp_path, plain, "--key", site.key)
    assert (code, out) == (10, "") and "is not signed" in one_sentence(err)
    site.write("plain2.txt.sig", b"not a signature\n")
    site.write("plain2.txt", NORMALISED)
    assert listserv_verify(tmp_path, site.base / "plain2.txt", "--key", site.key)[0] == 10


# -- signed by the list key, but not a statement ---------------------------------------------

NOT_A_STATEMENT = "is signed by the list key (on "


def test_a_copy_of_a_post_lifted_out_of_a_members_mail_is_not_a_statement(site, tmp_path):
    """A post copy is signed and encrypted by the list key in one (stages.fanout); a member who
    strips the encryption (gpg --unwrap) holds a message gpg finds well signed by the list."""
    post = b"Content-Type: text/plain\r\n\r\nmeet at noon\r\n"
    sealed, signers = site.keyring.sign_and_encrypt(post, [site.fingerprint], site.fingerprint, [])
    assert signers == [site.fingerprint]
    unwrapped = run([*GPG_BATCH, "--homedir", str(site.cli.home / "keys"), "--unwrap", "--decrypt"],
                    input=sealed).stdout
    lifted = site.write("lifted.gpg", unwrapped)
    done = gpg_verify(tmp_path, site.key, lifted)
    assert done.returncode == 0 and b"[GNUPG:] GOODSIG " in done.stdout and b"NOTATION" not in done.stdout
    code, out, err = listserv_verify(tmp_path, lifted, "--key", site.key)
    assert (code, out) == (15, "")
    assert NOT_A_STATEMENT in one_sentence(err) and "lacks the statement notation" in err


def test_a_key_reply_signature_or_a_plain_clearsign_by_the_list_is_not_a_statement(site, tmp_path):
    """The list's other signatures: the detached one of a key reply (stages.sendkey), and the
    list key cleartext-signing without the notation (an admin with a shell, by hand)."""
    site.write("reply.txt", NORMALISED)
    site.write("reply.txt.sig", site.keyring.sign_detached(NORMALISED, site.fingerprint))
    hand = site.write("hand.asc", run([*GPG_BATCH, "--homedir", str(site.cli.home / "keys"), "--local-user",
                                       site.fingerprint, "--clearsign"], input=NORMALISED).stdout)
    assert gpg_verify(tmp_path, site.key, site.base / "reply.txt.sig", site.base / "reply.txt").returncode == 0
    assert gpg_verify(tmp_path, site.key, hand).returncode == 0  # good signatures all the same
    for file in (site.base / "reply.txt", hand):
        code, _, err = listserv_verify(tmp_path, file, "--key", site.key)
        assert code == 15 and NOT_A_STATEMENT in one_sentence(err)


def test_a_statement_naming_another_list_is_refused(site, tmp_path):
    """The notation names a list: with --key it must be one of the key's addresses, with --list
    that very list."""
    other = site.write("other.asc", site.keyring.clearsign_statement(site.fingerprint, TEXT, "other@example.org"))
    code, _, err = listserv_verify(tmp_path, other, "--key", site.key)
    assert code == 16 and "names the list other@example.org" in one_sentence(err)
    done = site.cli("verify", str(other), "--list", LIST)
    assert done.exit_code == 16 and "is a statement of other@example.org, not of news@example.org" in done.stderr


# -- the list key expired or revoked, the signature expired -------------------------------------

def test_a_statement_of_an_expired_list_key_is_refused(tmp_path):
    old = make_gpg_key(tmp_path, "Old", "old@example.org", expire="2d", at="20200101T000000")
    then = Keyring(old.home, "--faked-system-time", "20200102T000000!")
    signed = tmp_path / "old.asc"
    signed.write_bytes(then.clearsign_statement(old.fingerprint, TEXT, "old@example.org"))
    key = tmp_path / "old-key.asc"
    key.write_bytes(old.public_key)
    done = gpg_verify(tmp_path, key, signed)
    assert b"[GNUPG:] EXPKEYSIG " in done.stdout
    code, out, err = listserv_verify(tmp_path, signed, "--key", key)
    assert (code, out) == (13, "")
    assert ("was signed by the list key on 2020-01-02 00:00 UTC, but that key expired on 2020-01-03"
            in one_sentence(err))
    then.stop_agent()


def test_a_signature_that_expired_is_refused(tmp_path):
    old = make_gpg_key(tmp_path, "Old", "old@example.org", at="20200101T000000")
    signed = tmp_path / "short.asc"
    signed.write_bytes(old.gpg("--faked-system-time", "20200102T000000!", "--local-user", old.fingerprint,
                               "--default-sig-expire", "1d", "--sig-notation",
                               "statement@example.org=old@example.org", "--clearsign", input=NORMALISED).stdout)
    key = tmp_path / "old-key.asc"
    key.write_bytes(old.public_key)
    code, _, err = listserv_verify(tmp_path, signed, "--key", key)
    assert code == 13 and "but the signature expired on 2020-01-03" in one_sentence(err)


def test_a_statement_of_a_revoked_list_key_is_refused(tmp_path):
    user = make_gpg_key(tmp_path, "News", LIST)
    signed = tmp_path / "before.asc"
    signed.write_bytes(Keyring(user.home).clearsign_statement(user.fingerprint, TEXT, LIST))
    key = tmp_path / "revoked-key.asc"
    key.write_bytes(revoked(user))
    assert b"[GNUPG:] REVKEYSIG " in gpg_verify(tmp_path, key, signed).stdout
    code, _, err = listserv_verify(tmp_path, signed, "--key", key)
    assert code == 14 and "but that key has been revoked" in one_sentence(err)
    Keyring(user.home).stop_agent()


# -- the key file and the command line ---------------------------------------------------------

def test_a_missing_key_file_or_statement_is_one_sentence_and_exit_2(site, tmp_path):
    code, _, err = listserv_verify(tmp_path, site.statement, "--key", tmp_path / "nothere.asc")
    assert code == 2 and f"The key file {tmp_path / 'nothere.asc'} does not exist." in one_sentence(err)
    code, _, err = listserv_verify(tmp_path, tmp_path / "nothere.asc", "--key", site.key)
    assert code == 2 and "does not exist" in one_sentence(err)
    code, _, err = listserv_verify(tmp_path, site.statement)
    assert code == 2 and "--key KEYFILE" in one_sentence(err)
    code, _, err = listserv_verify(tmp_path, site.statement, "--key", site.key, "--list", LIST)
    assert code == 2


def test_a_key_file_that_is_not_one_key_is_refused(site, impostor, tmp_path):
    files = {
        "garbage": (bytes(range(256)) * 8, "holds no OpenPGP key that GnuPG can read"),
        "empty": (b"", "holds no OpenPGP key that GnuPG can read"),
        "text": (NORMALISED, "holds no OpenPGP key that GnuPG can read"),
        "two": (site.key.read_bytes() + impostor.public_key, "holds 2 keys; give a file with the list's key alone"),
        "secret": (secret_key(impostor), "holds a secret key"),
    }
    for name, (data, said) in files.items():
        key = site.write(f"key-{name}.asc", data)
        code, out, err = listserv_verify(tmp_path, site.statement, "--key", key)
        assert (code, out) == (5, ""), name
        assert f"The key file {key} {said}" in one_sentence(err), name


# -- the text a statement signs -------------------------------------------------------------------

def test_normalise_makes_one_text_of_what_clients_make_of_it():
    assert statement.normalise(TEXT) == NORMALISED
    assert statement.normalise(b"\n\n  \nA\r\rB\t \n\n\n") == b"A\n\nB\n"
    decomposed, composed = "Gru\u0308\u00dfe".encode(), "Gr\u00fc\u00dfe\n".encode()
    assert statement.normalise(decomposed) == composed
    for bad in (b"", b" \r\n\t\n", b"\xff\xfe"):
        with pytest.raises(UsageError):
            statement.normalise(bad)
    # What x-sign-this counts (its digest) is what the keyring signs: its normalised text passes unchanged.
    for sample in (TEXT.decode(), "Gru\u0308\u00dfe\u00a0\n\n\tindented\u2003\n", "\n\none line"):
        counted = read_normalised(sample).encode()
        assert statement.normalise(counted) == counted
    assert statement.notation("News@Example.ORG") == "statement@example.org=news@example.org"


def test_the_readers_page_lists_every_reason_with_its_exit():
    from listserv import errors

    doc = (Path(__file__).resolve().parent.parent / "docs" / "verify.md").read_text()
    for cls in (errors.NotSigned, errors.OtherSigner, errors.Altered, errors.Expired, errors.Revoked,
                errors.NotAStatement, errors.OtherList):
        assert f"\n| {cls.exit_code} |" in doc, cls.__name__
    assert "--verify-options show-notations" in doc and "sq verify --signer-cert" in doc


def test_the_key_a_web_key_directory_serves_checks_the_statements_of_its_address_only(site, tmp_path):
    """WKD serves the list key with one address's user id (`listserv wkd export`): the file for
    news@ checks a statement of news@; the file for news-request@ holds no user id for news@, so
    a reader who fetched the wrong address is told so rather than shown a verdict."""
    served = site.write("wkd-news.pgp", site.keyring.export_user_id(site.fingerprint, LIST))
    assert listserv_verify(tmp_path, site.statement, "--key", served)[:2] == (0, listserv_verify(
        tmp_path, site.statement, "--key", site.key)[1])
    request = site.write("wkd-request.pgp", site.keyring.export_user_id(site.fingerprint, "news-request@example.org"))
    code, _, err = listserv_verify(tmp_path, site.statement, "--key", request)
    assert code == 16 and f"names the list {LIST}, but the list key in {request} has no user id" in one_sentence(err)


def test_only_the_statement_signatures_carry_a_notation():
    """The list signs post copies, resends and key replies too (stages.fanout, stages.sendkey):
    none may carry the statement notation, so no gpg run but the statement's asks for one."""
    package = Path(__file__).resolve().parent.parent / "listserv"
    passing = {str(path.relative_to(package)) for path in package.rglob("*.py")
               if "--sig-notation" in path.read_text() or "--set-notation" in path.read_text()}
    assert passing == {"keyring/__init__.py"}, passing
    source = (package / "keyring" / "__init__.py").read_text()
    assert source.count("--sig-notation") == 1 and "--set-notation" not in source
    assert source.index("--sig-notation") > source.index("def _sign_statement")
