"""etcdops.crypto.keys: which recipients a backup host encrypts to, named by where they are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etcdops.crypto.x25519 import Identity
from etcdops.errors import CryptoError


def test_configured_recipients_name_the_files_line_and_the_lists_entry(tmp_path: Path) -> None:
    from etcdops.config import EncryptionConfig
    from etcdops.crypto.keys import configured_recipients

    good = str(Identity.generate().recipient())
    listed = EncryptionConfig(recipients=(good, "age1bogus"))
    with pytest.raises(CryptoError, match=r"^\[encryption\] recipients entry 2: "):
        configured_recipients(listed)
    path = tmp_path / "recipients.txt"
    path.write_text(f"# ops\n\n# dr site\n{good}\n\n# new key\nage1bogus\n")
    with pytest.raises(CryptoError, match=rf"^{re.escape(str(path))} line 7: .*age1bogus"):
        configured_recipients(EncryptionConfig(recipients_file=path))
