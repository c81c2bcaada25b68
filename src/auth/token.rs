//! Access tokens (API.md §2): verification of tenant JWTs, and minting of HS256
//! ones for `devicehub token` and the demo.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Settings;
use crate::error::{ApiError, StartupError};

/// Tokens expired (or not yet valid) by less than this still pass.
pub const LEEWAY_SECS: u64 = 30;

/// The scopes devicehub knows; other words in `scope` are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub devices_read: bool,
    pub admin: bool,
}

impl Scopes {
    pub const DEVICES_READ: &'static str = "devices:read";
    pub const ADMIN: &'static str = "admin";

    /// Exact-word matching over a list of words (RFC 9068).
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut scopes = Scopes::default();
        for word in words {
            match word {
                Self::DEVICES_READ => scopes.devices_read = true,
                Self::ADMIN => scopes.admin = true,
                _ => {}
            }
        }
        scopes
    }

    /// The words of a `scope` string: separated by U+0020 only (RFC 6749
    /// §3.3), so `"x\tadmin"` is one unknown word, not `admin`.
    pub fn parse_str(text: &str) -> Scopes {
        Scopes::parse(text.split(' ').filter(|w| !w.is_empty()))
    }

    pub fn can_read(self) -> bool {
        self.devices_read || self.admin
    }

    pub fn is_admin(self) -> bool {
        self.admin
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub scopes: Scopes,
    /// The `sub` claim, used only to name the actor in change logs.
    pub subject: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    tenant_id: Option<Value>,
    scope: Option<Value>,
    scp: Option<Value>,
    sub: Option<Value>,
    exp: Option<f64>,
}

/// Tokens already verified, so that a client sending the same token again
/// costs a hash look-up instead of a signature check and two JSON parses.
/// An entry is used only until its token expires (with the leeway), and the
/// whole cache is dropped when it reaches `VERIFIED_CACHE_MAX` entries, so it
/// holds at most that many principals.
#[derive(Default)]
struct VerifiedCache {
    /// token → (who it speaks for, last Unix second it may be used)
    entries: Mutex<HashMap<Box<str>, Verified>>,
}

type Verified = (Arc<Principal>, u64);

const VERIFIED_CACHE_MAX: usize = 4096;

impl VerifiedCache {
    fn get(&self, token: &str, now: u64) -> Option<Arc<Principal>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(token) {
            Some((principal, valid_until)) if now <= *valid_until => Some(principal.clone()),
            Some(_) => {
                entries.remove(token);
                None
            }
            None => None,
        }
    }

    fn put(&self, token: &str, principal: Arc<Principal>, valid_until: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_CACHE_MAX {
            entries.clear();
        }
        entries.insert(token.into(), (principal, valid_until));
    }
}

/// Checks signatures, algorithm, time claims and, when configured, `iss`/`aud`.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    verified: VerifiedCache,
}

/// How tokens are verified: a shared secret, or a public key.
pub enum VerificationKey {
    Hs256(Vec<u8>),
    Public(Algorithm, DecodingKey),
}

impl VerificationKey {
    /// Reads `auth.public_key_file` when set; otherwise the HS256 secret.
    pub fn from_settings(settings: &Settings) -> Result<VerificationKey, StartupError> {
        match &settings.auth.public_key_file {
            Some(path) => {
                let (alg, key) = load_public_key(path)?;
                Ok(VerificationKey::Public(alg, key))
            }
            None => Ok(VerificationKey::Hs256(super::secret::load_or_create(
                settings,
            )?)),
        }
    }
}

impl TokenVerifier {
    pub fn new(key: VerificationKey, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let (alg, key) = match key {
            VerificationKey::Hs256(secret) => (Algorithm::HS256, DecodingKey::from_secret(&secret)),
            VerificationKey::Public(alg, key) => (alg, key),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        TokenVerifier {
            key,
            validation,
            verified: VerifiedCache::default(),
        }
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, StartupError> {
        Ok(TokenVerifier::new(
            VerificationKey::from_settings(settings)?,
            settings.auth.issuer.as_deref(),
            settings.auth.audience.as_deref(),
        ))
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal);
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let principal = Arc::new(principal);
        // `exp` was checked (leeway included); the entry lives no longer.
        // A float cast saturates, and so must the sum: an `exp` of 2^64-1 is
        // merely a token that never expires.
        let valid_until = (exp.max(0.0) as u64).saturating_add(LEEWAY_SECS);
        self.verified.put(token, principal.clone(), valid_until);
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Principal, f64), ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                ApiError::unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidIssuer => "the token has the wrong issuer",
                    ErrorKind::InvalidAudience => "the token has the wrong audience",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                })
            })?;
        // No extension is understood, so none that is critical can be honoured
        // (RFC 7515 §4.1.11).
        if data.header.crit.is_some() {
            return Err(ApiError::unauthorized(
                "the token's header has `crit`: no extension is understood",
            ));
        }
        let claims = data.claims;
        let tenant_id = match claims.tenant_id {
            Some(Value::String(t)) if is_tenant_id(&t) => t,
            Some(Value::String(_)) => {
                return Err(ApiError::unauthorized(
                    "the token's tenant_id must be 1-128 characters without control characters",
                ))
            }
            _ => return Err(ApiError::unauthorized("the token has no tenant_id")),
        };
        let bad_scope = || ApiError::unauthorized("the token's scope claim is malformed");
        let scopes = match (claims.scope, claims.scp) {
            (Some(Value::String(s)), _) => Scopes::parse_str(&s),
            (Some(_), _) => return Err(bad_scope()),
            (None, Some(Value::String(s))) => Scopes::parse_str(&s),
            (None, Some(Value::Array(items))) => {
                let mut words = Vec::with_capacity(items.len());
                for item in &items {
                    words.push(item.as_str().ok_or_else(bad_scope)?);
                }
                Scopes::parse(words)
            }
            (None, Some(_)) => return Err(bad_scope()),
            (None, None) => Scopes::default(),
        };
        let subject = match claims.sub {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let exp = claims
            .exp
            .ok_or(ApiError::unauthorized("the token lacks a required claim"))?;
        Ok((
            Principal {
                tenant_id,
                scopes,
                subject,
            },
            exp,
        ))
    }
}

/// The longest `tenant_id` accepted, in characters.
pub const TENANT_ID_MAX_CHARS: usize = 128;

/// 1-128 characters (Unicode scalar values), none of them a control character.
pub fn is_tenant_id(text: &str) -> bool {
    (1..=TENANT_ID_MAX_CHARS).contains(&text.chars().count()) && !text.chars().any(char::is_control)
}

/// Recognises the key type from the PEM and picks the one algorithm it verifies.
fn load_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), StartupError> {
    let name = "auth.public_key_file";
    let pem = std::fs::read(path)
        .map_err(|e| StartupError::new(format!("{name}: cannot read {}: {e}", path.display())))?;
    let unsupported = || {
        StartupError::new(format!(
            "{name}: {} is not a PEM public key of a supported type (RSA, EC P-256, Ed25519)",
            path.display()
        ))
    };
    let der = pem_body(&pem).ok_or_else(unsupported)?;
    // Object identifiers, DER-encoded, as they stand in a SubjectPublicKeyInfo.
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let is_pkcs1_rsa = String::from_utf8_lossy(&pem).contains("BEGIN RSA PUBLIC KEY");
    let (alg, key) = if has(RSA) || is_pkcs1_rsa {
        (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
    } else if has(EC) && has(P256) {
        (Algorithm::ES256, DecodingKey::from_ec_pem(&pem))
    } else if has(ED25519) {
        (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem))
    } else {
        return Err(unsupported());
    };
    Ok((alg, key.map_err(|_| unsupported())?))
}

/// The base64 body of the first PEM block, decoded.
fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")?;
    let body_start = start + text[start..].find('\n')? + 1;
    let body_end = body_start + text[body_start..].find("-----END ")?;
    let b64: String = text[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub tenant_id: &'a str,
    pub scope: &'a str,
    pub ttl_secs: u64,
    pub subject: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    tenant_id: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs an HS256 access token.
pub fn mint_hs256(secret: &[u8], request: &TokenRequest<'_>) -> Result<String, StartupError> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintedClaims {
        tenant_id: request.tenant_id,
        scope: request.scope,
        iat: now,
        exp: now.saturating_add(request.ttl_secs),
        sub: request.subject,
        iss: request.issuer,
        aud: request.audience,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| StartupError::new(format!("cannot sign the token: {e}")))
}

/// Parses `90s`, `30m`, `12h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], &text[i..]),
        _ => (text, "s"),
    };
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a duration like 90s, 30m, 12h, 7d or 3600"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    match n.checked_mul(multiplier) {
        Some(0) => Err("the ttl must be more than zero".to_string()),
        Some(secs) => Ok(secs),
        None => Err(format!("`{text}` is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn request(scope: &str) -> TokenRequest<'_> {
        TokenRequest {
            tenant_id: "t1",
            scope,
            ttl_secs: 60,
            subject: Some("alice"),
            issuer: None,
            audience: None,
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(VerificationKey::Hs256(SECRET.to_vec()), None, None)
    }

    #[test]
    fn scopes_match_exact_words_only() {
        assert!(Scopes::parse("devices:read".split(' ')).can_read());
        assert!(!Scopes::parse("devices:reader admins".split(' ')).can_read());
        assert!(Scopes::parse(["admin"]).can_read());
        assert!(!Scopes::parse(["devices:read"]).is_admin());
        assert!(!Scopes::parse(["Admin", "DEVICES:READ"]).can_read());
    }

    #[test]
    fn scope_words_are_separated_by_spaces_only() {
        assert!(Scopes::parse_str("devices:read  admin").is_admin());
        assert!(Scopes::parse_str(" devices:read ").can_read());
        for smuggled in [
            "x\tadmin",
            "x\nadmin",
            "x\u{a0}admin",
            "admin\r",
            "\u{3000}admin",
        ] {
            assert_eq!(
                Scopes::parse_str(smuggled),
                Scopes::default(),
                "{smuggled:?}"
            );
        }
    }

    fn signed(header: Header, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn tenant_ids_are_1_to_128_characters_without_controls() {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let with = |tenant: &str| {
            let token = signed(
                Header::new(Algorithm::HS256),
                serde_json::json!({"tenant_id": tenant, "scope": "admin", "exp": exp}),
            );
            verifier().verify(&token).map(|p| p.tenant_id.clone())
        };
        assert_eq!(with(&"é".repeat(128)).unwrap(), "é".repeat(128));
        for bad in ["", "acme\n", "a\u{0}b", "\u{7f}", &"a".repeat(129)] {
            assert!(
                matches!(with(bad), Err(ApiError::Unauthorized { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_header_with_crit_is_refused() {
        let claims = serde_json::json!({"tenant_id": "t", "scope": "admin",
            "exp": jsonwebtoken::get_current_timestamp() + 600});
        let mut header = Header::new(Algorithm::HS256);
        assert!(verifier()
            .verify(&signed(header.clone(), claims.clone()))
            .is_ok());
        header.crit = Some(vec!["exp".into()]);
        let refused = verifier().verify(&signed(header, claims));
        assert!(
            matches!(refused, Err(ApiError::Unauthorized { message, .. }) if message.contains("crit"))
        );
    }

    #[test]
    fn the_largest_exp_neither_overflows_nor_expires() {
        let verifier = verifier();
        let token = signed(
            Header::new(Algorithm::HS256),
            serde_json::json!({"tenant_id": "t", "scope": "admin", "exp": u64::MAX}),
        );
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "and again, from the cache");
    }

    #[test]
    fn a_minted_token_verifies_to_its_principal() {
        let token = mint_hs256(SECRET, &request("devices:read admin")).unwrap();
        let principal = verifier().verify(&token).unwrap();
        assert_eq!(principal.tenant_id, "t1");
        assert!(principal.scopes.is_admin());
        assert_eq!(principal.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn another_secret_is_refused() {
        let token = mint_hs256(b"another-secret-of-enough-length!!", &request("admin")).unwrap();
        assert!(matches!(
            verifier().verify(&token),
            Err(ApiError::Unauthorized { .. })
        ));
    }

    #[test]
    fn a_cached_token_is_not_used_past_its_expiry() {
        let verifier = verifier();
        let principal = Arc::new(Principal {
            tenant_id: "t".into(),
            scopes: Scopes::default(),
            subject: None,
        });
        verifier.verified.put("tok", principal, 100);
        assert!(verifier.verified.get("tok", 100).is_some());
        assert!(verifier.verified.get("tok", 101).is_none());
        assert!(
            verifier.verified.get("tok", 50).is_none(),
            "an expired entry is dropped"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let verifier = verifier();
        for i in 0..(VERIFIED_CACHE_MAX + 10) {
            let token = mint_hs256(
                SECRET,
                &TokenRequest {
                    tenant_id: &format!("t{i}"),
                    ..request("admin")
                },
            )
            .unwrap();
            verifier.verify(&token).unwrap();
        }
        assert!(verifier.verified.entries.lock().unwrap().len() <= VERIFIED_CACHE_MAX);
    }

    #[test]
    fn ttl_accepts_the_documented_forms() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("3600"), Ok(3600));
        for bad in ["", "h", "1w", "-5", "0", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
