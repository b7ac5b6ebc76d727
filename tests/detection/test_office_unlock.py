"""The portal unlocks what the scan can open: a workbook whose writer padded the agile password
verifier decrypts with the right password (msoffcrypto's verifier check refused it), and a
wrong password is still a wrong password."""

from __future__ import annotations

import pytest

from mailmoat.services.unlock import WrongPassword, decrypt
from mailmoat.settings import Limits
from tests.detection.test_office_encryption import agile_encrypt, workbook


def test_the_right_password_opens_a_padded_verifier_workbook() -> None:
    plain = workbook("xlsx")
    locked = agile_encrypt(plain, "pw-1234", padded_verifier=True)
    opened = decrypt(locked, "application/encrypted", "pw-1234", Limits())
    assert opened.members[0][1][:2] == b"PK"


def test_a_wrong_password_is_refused() -> None:
    locked = agile_encrypt(workbook("xlsx"), "pw-1234", padded_verifier=True)
    with pytest.raises(WrongPassword):
        decrypt(locked, "application/encrypted", "wrong", Limits())
