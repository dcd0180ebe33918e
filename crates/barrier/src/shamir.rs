//! Shamir secret sharing over GF(2^8) (the AES field, polynomial x^8+x^4+x^3+x+1).
//!
//! A share is `secret.len() + 1` bytes: the y values followed by the x coordinate
//! (1..=255), the same layout Vault uses. Field multiplication is branch-free so that
//! timing does not depend on secret bytes.
//!
//! Shares carry no integrity check of their own: combining a wrong share yields a wrong
//! secret, which the caller detects because the root key then fails AES-GCM
//! authentication. Duplicate x coordinates are refused here.

use crate::random_bytes;
use zeroize::Zeroizing;

/// Errors of splitting and combining.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShamirError {
    /// Threshold or share count outside 1..=255, or threshold above share count.
    #[error("invalid parameters: need 1 <= threshold <= shares <= 255 (got threshold {threshold}, shares {shares})")]
    Parameters {
        /// Requested threshold.
        threshold: usize,
        /// Requested share count.
        shares: usize,
    },
    /// A share has the wrong length or a zero x coordinate.
    #[error("malformed share")]
    MalformedShare,
    /// Two shares with the same x coordinate were given.
    #[error("duplicate share")]
    DuplicateShare,
    /// No shares were given.
    #[error("no shares given")]
    Empty,
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Constant-time multiplication in GF(2^8).
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & (0u8.wrapping_sub(b & 1));
        let hi = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & hi);
        b >>= 1;
    }
    p
}

/// Inverse by exponentiation a^254 (constant time; 0 maps to 0).
fn gf_inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    for _ in 0..8 {
        let m = 0u8.wrapping_sub(e & 1);
        result = (gf_mul(result, base) & m) | (result & !m);
        base = gf_mul(base, base);
        e >>= 1;
    }
    result
}

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
pub fn split(
    secret: &[u8],
    threshold: usize,
    shares: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    if threshold == 0 || shares == 0 || threshold > shares || shares > 255 {
        return Err(ShamirError::Parameters { threshold, shares });
    }
    let mut out: Vec<Zeroizing<Vec<u8>>> = (1..=shares)
        .map(|_| Zeroizing::new(Vec::with_capacity(secret.len() + 1)))
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; threshold]);
    for &s in secret {
        coeffs[0] = s;
        random_bytes(&mut coeffs[1..]).map_err(|_| ShamirError::Random)?;
        for (i, share) in out.iter_mut().enumerate() {
            let x = (i + 1) as u8;
            // Horner evaluation of the polynomial at x.
            let mut y = 0u8;
            for c in coeffs.iter().rev() {
                y = gf_mul(y, x) ^ c;
            }
            share.push(y);
        }
    }
    for (i, share) in out.iter_mut().enumerate() {
        share.push((i + 1) as u8);
    }
    Ok(out)
}

/// Recombines shares by Lagrange interpolation at x = 0.
pub fn combine(shares: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::Empty)?;
    let len = first.len();
    if len < 2 {
        return Err(ShamirError::MalformedShare);
    }
    let mut xs = Vec::with_capacity(shares.len());
    for s in shares {
        if s.len() != len {
            return Err(ShamirError::MalformedShare);
        }
        let x = s[len - 1];
        if x == 0 {
            return Err(ShamirError::MalformedShare);
        }
        if xs.contains(&x) {
            return Err(ShamirError::DuplicateShare);
        }
        xs.push(x);
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (j, s) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
        let mut num = 1u8;
        let mut den = 1u8;
        for (m, &xm) in xs.iter().enumerate() {
            if m != j {
                num = gf_mul(num, xm);
                den = gf_mul(den, xm ^ xs[j]);
            }
        }
        let basis = gf_mul(num, gf_inv(den));
        for (b, &y) in secret.iter_mut().zip(s[..len - 1].iter()) {
            *b ^= gf_mul(y, basis);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_inverse_is_correct_for_all_nonzero_elements() {
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "a={a}");
        }
        // Known AES-field product: 0x57 * 0x83 = 0xc1 (FIPS-197 4.2).
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
    }

    #[test]
    fn any_threshold_subset_recovers_the_secret() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let shares = split(secret, 3, 5).unwrap();
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    if a == b || b == c || a == c {
                        continue;
                    }
                    let got = combine(&[&shares[a], &shares[b], &shares[c]]).unwrap();
                    assert_eq!(&got[..], secret);
                }
            }
        }
    }

    #[test]
    fn fewer_than_threshold_shares_do_not_recover_the_secret() {
        let secret = [0x42u8; 32];
        let shares = split(&secret, 3, 5).unwrap();
        let got = combine(&[&shares[0], &shares[1]]).unwrap();
        assert_ne!(&got[..], &secret[..]);
    }

    #[test]
    fn duplicate_share_is_refused() {
        let shares = split(&[1u8; 32], 2, 3).unwrap();
        assert_eq!(
            combine(&[&shares[0], &shares[0]]).unwrap_err(),
            ShamirError::DuplicateShare
        );
    }

    #[test]
    fn malformed_shares_are_refused() {
        assert_eq!(combine(&[]).unwrap_err(), ShamirError::Empty);
        assert_eq!(combine(&[&[1u8]]).unwrap_err(), ShamirError::MalformedShare);
        assert_eq!(
            combine(&[&[1u8, 2, 0]]).unwrap_err(),
            ShamirError::MalformedShare
        );
        assert_eq!(
            combine(&[&[1u8, 2, 1], &[1u8, 2, 3, 2]]).unwrap_err(),
            ShamirError::MalformedShare
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(split(b"k", 0, 1).is_err());
        assert!(split(b"k", 3, 2).is_err());
        assert!(split(b"k", 2, 256).is_err());
        assert_eq!(split(b"k", 1, 1).unwrap().len(), 1);
    }
}
