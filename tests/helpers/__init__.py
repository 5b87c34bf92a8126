"""What the tests share, and nothing else: tests import from here, never from one another.

    keys             throwaway OpenPGP identities made by GnuPG, Sequoia and RNP; gpg's colon listings
    mail             submissions built the way real mail clients build them
    forge            an attacker's OpenPGP packets, byte by byte
    members_clients  what a member's own client does with a copy from the list
    cli              the `listserv` command in-process, and a home with one list and its members
    server           `listserv serve` as a real process on loopback
    smtp             a member's MTA submitting to `listserv serve`
    sink             a real SMTP server on loopback standing in for the relay
    tls              a self-signed certificate for a relay that speaks STARTTLS
    postfix          a private Postfix set up as docs/postfix.md says
    sandbox          a script: run a command under systemd's MemoryDenyWriteExecute rule
"""
