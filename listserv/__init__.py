"""listserv: a private mailing list whose posts are signed by members' pinned keys and
re-encrypted to every member. See docs/guide.md; the command line is `listserv.cli:main`."""
