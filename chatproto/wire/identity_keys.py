"""Which Ed25519 public keys may serve as a server identity.

OpenSSL's Ed25519 verification accepts some degenerate public keys: with the small-order key
``01 00..00`` (the neutral element) a forged signature verifies. A client therefore checks the
identity key before it verifies anything with it, and refuses a key that is

- not canonical: the encoded y coordinate is not below p = 2^255 - 19, or x = 0 is encoded with
  the sign bit set;
- not a point of the curve;
- of small order (8·P is the neutral element), or with any small-order component (L·P is not
  the neutral element, L the order of the base point): every honestly generated key is a
  multiple of the base point and passes.

Plain integer arithmetic on the twisted Edwards curve (RFC 8032, section 5.1); public data only,
so timing does not matter here.
"""

from __future__ import annotations

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_L = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
_NEUTRAL: _Point = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result = _NEUTRAL
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _is_neutral(p: _Point) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def _decode(raw: bytes) -> _Point | None:
    """The point a 32-byte encoding names, or None if it is not canonical or not on the curve."""
    if len(raw) != 32:
        return None
    value = int.from_bytes(raw, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P != 0:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def identity_key_problem(raw: bytes) -> str | None:
    """Why ``raw`` cannot be an identity key, or None if it is a sound Ed25519 public key."""
    point = _decode(raw)
    if point is None:
        return "not a canonical Ed25519 point"
    if _is_neutral(_multiply(8, point)):
        return "a small-order Ed25519 point"
    if not _is_neutral(_multiply(_L, point)):
        return "an Ed25519 point outside the prime-order subgroup"
    return None
