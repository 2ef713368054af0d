"""The Grayscale Standard Display Function (PS3.14 chapter 7) and its use for hardcopy.

PS3.14 7.1 defines the GSDF by the Barten model as luminance L (cd/m²) against the JND index j
(1 <= j <= 1023, 0.05 to about 4000 cd/m²). It publishes two interpolating formulas, both here:

- L(j) (PS3.14 7.1, equation 1): log10 L(j) is a rational polynomial in ln j, numerator of degree 4
  (coefficients a, c, e, g, m), denominator of degree 5 (b, d, f, h, k).
- j(L) (PS3.14 7.1, equation 2): j is a polynomial of degree 8 in log10 L (coefficients A .. I).

They are each other's inverse to well within one JND over the defined range; the coefficients below are
the published ones (PS3.14 Table 7-1 and 7-2).

Hardcopy (PS3.14 7.2 transmissive, 7.3 reflective): a printed optical density D seen on a light box of
luminance L0 with reflected ambient light La gives L = La + L0 * 10**-D (for reflective prints,
L = L0 * 10**-D). A film printed from Dmin to Dmax spans L from Lmin = La + L0 * 10**-Dmax to
Lmax = La + L0 * 10**-Dmin, that is JND indices jmin = j(Lmin) .. jmax = j(Lmax). An N-bit P-value p
stands for j(p) = jmin + p / (2**N - 1) * (jmax - jmin): P-values are linear in JND index, 0 the
darkest (Dmax), 2**N - 1 the lightest (Dmin). Its density is D(p) = -log10((L(j(p)) - La) / L0).

Everything works on numpy arrays (vectorised) and on plain floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# PS3.14 7.1 equation 1: L(j) = 10 ** ((a + c x + e x² + g x³ + m x⁴) / (1 + b x + d x² + f x³ + h x⁴ + k x⁵)),
# x = ln j.
_A_LOW = -1.3011877
_B_LOW = -2.5840191e-2
_C_LOW = 8.0242636e-2
_D_LOW = -1.0320229e-1
_E_LOW = 1.3646699e-1
_F_LOW = 2.8745620e-2
_G_LOW = -2.5468404e-2
_H_LOW = -3.1978977e-3
_K_LOW = 1.2992634e-4
_M_LOW = 1.3635334e-3

# PS3.14 7.1 equation 2: j(L) = A + B y + C y² + D y³ + E y⁴ + F y⁵ + G y⁶ + H y⁷ + I y⁸, y = log10 L.
_J_COEFFS = (
    71.498068,     # A
    94.593053,     # B
    41.912053,     # C
    9.8247004,     # D
    0.28175407,    # E
    -1.1878455,    # F
    -0.18014349,   # G
    0.14710899,    # H
    -0.017046845,  # I
)

#: The range over which PS3.14 defines the function.
JND_MIN = 1.0
JND_MAX = 1023.0
LUMINANCE_MIN = 0.05
LUMINANCE_MAX = 3986.0


def luminance(j: Any) -> Any:
    """L(j) in cd/m² for JND index j (PS3.14 7.1 equation 1)."""
    x = np.log(np.asarray(j, dtype=np.float64))
    num = _A_LOW + x * (_C_LOW + x * (_E_LOW + x * (_G_LOW + x * _M_LOW)))
    den = 1.0 + x * (_B_LOW + x * (_D_LOW + x * (_F_LOW + x * (_H_LOW + x * _K_LOW))))
    return 10.0 ** (num / den)


def jnd_index(lum: Any) -> Any:
    """j(L) for a luminance in cd/m² (PS3.14 7.1 equation 2)."""
    y = np.log10(np.asarray(lum, dtype=np.float64))
    out = np.zeros_like(y)
    for coeff in reversed(_J_COEFFS):  # Horner
        out = out * y + coeff
    return out


def density_luminance(density: Any, l0: float, la: float, *, reflective: bool = False) -> Any:
    """The luminance of a printed density: La + L0 * 10**-D (PS3.14 7.2), L0 * 10**-D for reflective
    prints (PS3.14 7.3)."""
    d = np.asarray(density, dtype=np.float64)
    return (0.0 if reflective else la) + l0 * 10.0 ** -d


def p_value_density(p: Any, d_min: float, d_max: float, l0: float, la: float, *,
                    reflective: bool = False) -> Any:
    """Optical density of P-values `p` given as fractions 0..1 of the P-value range (PS3.14 7.2/7.3).

    0 prints at `d_max`, 1 at `d_min`, and equal steps of P-value are equal steps of JND index between.
    """
    ambient = 0.0 if reflective else la
    # Outside 0.05..3986 cd/m² the GSDF is not defined (and the j(L) polynomial turns over): such
    # viewing conditions use the nearest defined luminance.
    lum_lo = np.clip(density_luminance(d_max, l0, la, reflective=reflective), LUMINANCE_MIN, LUMINANCE_MAX)
    lum_hi = np.clip(density_luminance(d_min, l0, la, reflective=reflective), LUMINANCE_MIN, LUMINANCE_MAX)
    j_lo, j_hi = jnd_index(lum_lo), jnd_index(lum_hi)
    j = j_lo + np.asarray(p, dtype=np.float64) * (j_hi - j_lo)
    lum = luminance(j)
    # The two published formulas are inverses of each other only to within a fraction of a JND (the
    # ends land within 0.001 OD of Dmax and Dmin); never step outside the requested range.
    ratio = np.clip((lum - ambient) / l0, 10.0 ** -d_max, 10.0 ** -d_min)
    return -np.log10(ratio)


__all__ = ["JND_MAX", "JND_MIN", "LUMINANCE_MAX", "LUMINANCE_MIN", "density_luminance",
           "jnd_index", "luminance", "p_value_density"]
