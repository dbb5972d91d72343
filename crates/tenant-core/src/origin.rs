//! Where a context tree came from: when its principal authenticated, and
//! which token and session (if any) it was minted from. Covered by the
//! proof and by context-token signatures, inherited by every delegation,
//! and consulted by revocation.

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};

/// The origin of a root context, shared by all its descendants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// When the principal authenticated, ms since the epoch: the issue time
    /// of a root made by the issuer, the `iat` of a JWT (0 when the token
    /// had none, so any subject revocation covers it).
    pub(crate) auth_time_ms: u64,
    /// The identity of the JWT the root was minted from.
    pub(crate) token: Option<[u8; 32]>,
    /// That JWT's `exp` in ms (0 without a token): a revocation of the
    /// root must outlive the token, which may outlive the context.
    pub(crate) token_expires_ms: u64,
    /// The identity of the JWT's session (`sid`).
    pub(crate) session: Option<[u8; 32]>,
}

impl Origin {
    /// A root made directly by an issuer at `now_ms`.
    pub(crate) fn direct(now_ms: u64) -> Self {
        Self {
            auth_time_ms: now_ms,
            token: None,
            token_expires_ms: 0,
            session: None,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.auth_time_ms).u64(self.token_expires_ms);
        for r in [&self.token, &self.session] {
            match r {
                None => {
                    w.u8(0);
                }
                Some(bytes) => {
                    w.u8(1).raw(bytes);
                }
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let auth_time_ms = r.u64()?;
        let token_expires_ms = r.u64()?;
        let mut refs = [None, None];
        for slot in &mut refs {
            *slot = match r.u8()? {
                0 => None,
                1 => Some(r.array()?),
                _ => return Err(Error::MalformedToken("origin")),
            };
        }
        let [token, session] = refs;
        Ok(Self {
            auth_time_ms,
            token,
            token_expires_ms,
            session,
        })
    }
}
