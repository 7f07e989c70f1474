"""AES-128-ECB/PKCS7 helpers against the PROTOCOL.md §10 vectors."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from ilinkbot.cdn import (
    CdnDownloadError,
    MediaRefused,
    StreamDecryptor,
    StreamEncryptor,
    ciphertext_size,
    decode_aes_key,
    decrypt,
    encrypt,
    file_md5_and_size,
    key_from_hex,
    message_aes_key,
    new_aes_key,
)
from tests.cdn.fakes import ref_decrypt, ref_encrypt

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


@pytest.mark.parametrize(
    ("plain", "cipher"), [(0, 16), (1, 16), (15, 16), (16, 32), (17, 32), (1_000_000, 1_000_016)]
)
def test_ciphertext_size_vectors(plain: int, cipher: int) -> None:
    assert ciphertext_size(plain) == cipher
    if plain <= 17:
        assert len(encrypt(b"x" * plain, KEY)) == cipher


def test_ciphertext_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        ciphertext_size(-1)


def test_fixed_key_vector() -> None:
    ct = encrypt(b"hello ilink", KEY)
    assert ct.hex() == "b7b86f6a7e5ca4c39d8da094d17d2f95"
    assert decrypt(ct, KEY) == b"hello ilink"
    assert hashlib.md5(b"hello ilink").hexdigest() == "a0e581bef9105ace19c7d2e59e66374d"


def test_empty_plaintext_is_one_padding_block() -> None:
    ct = encrypt(b"", KEY)
    assert ct.hex() == "00657ea140655a44782747705d422fad"
    assert decrypt(ct, KEY) == b""


def test_message_key_form_and_both_decodings() -> None:
    assert message_aes_key(KEY) == "MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY="
    assert decode_aes_key("MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=") == KEY
    assert decode_aes_key("ABEiM0RVZneImaq7zN3u/w==") == KEY
    assert key_from_hex("00112233445566778899aabbccddeeff") == KEY
    assert key_from_hex("00112233445566778899AABBCCDDEEFF") == KEY


def test_decode_key_tolerates_urlsafe_and_missing_padding() -> None:
    assert decode_aes_key("ABEiM0RVZneImaq7zN3u_w") == KEY


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "!!!!",
        base64.b64encode(b"short").decode(),
        base64.b64encode(b"z" * 32).decode(),  # 32 bytes, not hex
        base64.b64encode(b"0" * 24).decode(),
        base64.b64encode(KEY.hex().encode() + b"00").decode(),
    ],
)
def test_decode_key_rejects_anything_else(bad: str) -> None:
    with pytest.raises(MediaRefused):
        decode_aes_key(bad)


@pytest.mark.parametrize("bad", ["", "0011", "zz112233445566778899aabbccddeeff", KEY.hex() + "00"])
def test_key_from_hex_rejects_bad(bad: str) -> None:
    with pytest.raises(MediaRefused):
        key_from_hex(bad)


def test_new_keys_are_random_16_bytes() -> None:
    a, b = new_aes_key(), new_aes_key()
    assert len(a) == len(b) == 16 and a != b


SIZES = [0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 3 * 4096 + 5]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", [1, 7, 16, 4096])
def test_streaming_encrypt_equals_one_shot(size: int, chunk: int) -> None:
    if chunk == 1 and size > 64:
        pytest.skip("byte-by-byte only for the small sizes")
    data = os.urandom(size)
    enc = StreamEncryptor(KEY)
    parts = [enc.update(data[i : i + chunk]) for i in range(0, size, chunk)]
    parts.append(enc.finalize())
    assert all(len(p) % 16 == 0 for p in parts)
    out = b"".join(parts)
    assert out == ref_encrypt(data, KEY) == encrypt(data, KEY)
    assert len(out) == ciphertext_size(size)

    dec = StreamDecryptor(KEY)
    plain = b"".join(dec.update(out[i : i + chunk]) for i in range(0, len(out), chunk))
    assert plain + dec.finalize() == data


def test_streaming_multi_chunk_megabytes() -> None:
    data = os.urandom(5 * 2**20 + 3)
    enc = StreamEncryptor(KEY)
    step = 2**20
    out = b"".join(enc.update(data[i : i + step]) for i in range(0, len(data), step))
    out += enc.finalize()
    assert ref_decrypt(out, KEY) == data


def test_decrypt_rejects_bad_padding_and_partial_blocks() -> None:
    ct = encrypt(b"hello ilink", KEY)
    with pytest.raises(CdnDownloadError, match="padding"):
        decrypt(ct, bytes(16))  # wrong key ⇒ garbage padding (overwhelmingly likely)
    with pytest.raises(CdnDownloadError, match="multiple of 16"):
        decrypt(ct[:-1], KEY)
    with pytest.raises(CdnDownloadError):
        decrypt(b"", KEY)


def test_file_md5_and_size(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = os.urandom(3 * 1024 + 1)
    p.write_bytes(data)
    assert file_md5_and_size(p, chunk_size=1000) == (hashlib.md5(data).hexdigest(), len(data))
