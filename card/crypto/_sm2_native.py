"""SM2 sign/verify of a precomputed e = SM3(Z || M), through tongsuopy's cffi binding.

Why private API: tongsuopy's public `sign`/`verify` hash the message themselves with the
default ID and offer no Prehashed, but a card (GM/T 0016 `SKF_ECCSignData`) signs a
host-computed e, and we need non-default IDs and certificate checks over e. Tongsuo's
EVP_PKEY_sign on an SM2 key signs its input as e directly, at C speed. This is the only
module that touches tongsuopy internals; it is pinned to tongsuopy==1.0.1 for that
reason (pyproject.toml). Its tests would break first if an upgrade changed them.
"""

from __future__ import annotations

from typing import Any

from tongsuopy.backends.tongsuo.backend import backend as _backend

_lib: Any = _backend._lib
_ffi: Any = _backend._ffi
_MAX_DER_SIGNATURE = 80  # SEQUENCE(2 x INTEGER of at most 33 bytes) is 72


def _context(evp_pkey: Any) -> Any:
    ctx = _lib.EVP_PKEY_CTX_new(evp_pkey, _ffi.NULL)
    if ctx == _ffi.NULL:
        raise RuntimeError("EVP_PKEY_CTX_new failed")
    return _ffi.gc(ctx, _lib.EVP_PKEY_CTX_free)


def _clear_errors() -> None:
    _lib.ERR_clear_error()


def sign_e(evp_pkey: Any, e: bytes) -> bytes:
    """DER signature over the 32-byte e."""
    ctx = _context(evp_pkey)
    if _lib.EVP_PKEY_sign_init(ctx) != 1:
        _clear_errors()
        raise RuntimeError("EVP_PKEY_sign_init failed for the SM2 key")
    out = _ffi.new("unsigned char[]", _MAX_DER_SIGNATURE)
    out_len = _ffi.new("size_t *", _MAX_DER_SIGNATURE)
    if _lib.EVP_PKEY_sign(ctx, out, out_len, e, len(e)) != 1:
        _clear_errors()
        raise RuntimeError("EVP_PKEY_sign failed for the SM2 key")
    return bytes(_ffi.buffer(out, out_len[0]))


def verify_e(evp_pkey: Any, e: bytes, der_signature: bytes) -> bool:
    ctx = _context(evp_pkey)
    if _lib.EVP_PKEY_verify_init(ctx) != 1:
        _clear_errors()
        raise RuntimeError("EVP_PKEY_verify_init failed for the SM2 key")
    ok = _lib.EVP_PKEY_verify(ctx, der_signature, len(der_signature), e, len(e))
    if ok != 1:
        _clear_errors()  # a failed verify leaves an error queued; don't leak it to others
    return bool(ok == 1)
