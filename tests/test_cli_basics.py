from .conftest import write_key


def test_member_add_pins_the_key_and_lists_it(cli, news, people, tmp_path):
    alice = people["alice"]
    cli.ok("member", "add", news, "alice@example.org", "--key", write_key(tmp_path, alice), "--name", "Alice")
    [member] = cli.json("member", "list", news)
    assert member["fingerprint"] == alice.fingerprint
    assert member["name"] == "Alice"
    assert member["mode"] == "immediate"
