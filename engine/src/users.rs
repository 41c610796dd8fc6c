//! Users and their passwords, for password (SCRAM-SHA-256) authentication.
//!
//! A user's password is never stored: the record holds a SCRAM verifier
//! (a random salt and the salted password, PBKDF2-SHA-256), which is what
//! the SCRAM exchange needs to check a client's proof. Users are managed
//! with `CREATE USER name [WITH] PASSWORD '…'` (or `CREATE ROLE … LOGIN
//! PASSWORD`), `ALTER USER name [WITH] PASSWORD '…'` and `DROP USER`; each
//! change is a durable commit.
//!
//! An unknown user gets a mock verifier (as PostgreSQL's
//! `scram_mock_salt`): a salt derived from a secret of the installation and
//! the name, so that a client sees the same exchange, the same salt on every
//! attempt and the same failure as for a known user with a wrong password.
//!
//! Sessions of a dropped user must end at their next statement; the check
//! is in memory ([`Users::generation`], [`Users::dropped_since`]), not a
//! store read per statement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use millrace_storage::{Commit, Store};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::PgWireResult;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{AlterRoleOperation, Expr, Password as SqlPassword, RoleOption, Value};

use crate::error::{ErrorKind, SqlError, SqlResult};
use crate::Outcome;

/// PBKDF2 iterations of stored verifiers: the count pgwire's SCRAM
/// exchange announces (PostgreSQL's default too).
const ITERATIONS: usize = 4096;

/// A stored SCRAM verifier.
#[derive(Serialize, Deserialize)]
struct Verifier {
    salt: Vec<u8>,
    salted_password: Vec<u8>,
    iterations: usize,
}

/// The key (in the users' space of the store) of the installation's mock
/// salt secret. It begins with a NUL, which no client can send in a user
/// name (startup parameters and query texts are C strings), so it can
/// never be created, altered, dropped or logged into.
const MOCK_SECRET_KEY: &str = "\0millrace.mock_auth_secret";

/// The users of a data directory.
pub struct Users {
    store: Store,
    /// The secret mock salts are derived from: per installation (kept in
    /// the store, made on first need), so that an unknown user's salt stays
    /// the same across restarts, like a real user's. A per-process secret
    /// would change it at every restart and so tell unknown names apart.
    mock_secret: OnceLock<String>,
    /// Bumped after every `DROP USER` that removed someone; a session that
    /// saw this value at login and still sees it has lost nobody.
    generation: AtomicU64,
    /// For each user dropped since this process started: the generation
    /// its drop produced. Grows only with `DROP USER`s.
    dropped: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Users")
    }
}

fn store_error(e: millrace_storage::StorageError) -> SqlError {
    SqlError::from(e)
}

impl Users {
    /// The users stored in `store`.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            mock_secret: OnceLock::new(),
            generation: AtomicU64::new(0),
            dropped: Mutex::new(HashMap::new()),
        })
    }

    /// True when no user exists yet.
    pub fn is_empty(&self) -> SqlResult<bool> {
        Ok(self
            .store
            .user_names()
            .map_err(store_error)?
            .iter()
            .all(|n| n == MOCK_SECRET_KEY))
    }

    /// The current drop generation: a session takes it when its login
    /// starts, and compares it (one atomic load) before each statement.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True when user `name` was dropped after generation `since` (even if
    /// a user of that name was created again since: that is another user,
    /// as a role with a new OID is in PostgreSQL). In memory only.
    pub fn dropped_since(&self, name: &str, since: u64) -> bool {
        let dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        dropped.get(name).is_some_and(|&at| at > since)
    }

    /// The installation's mock salt secret, read from the store or made
    /// and stored on first need. If it cannot be stored, a secret for this
    /// process only is used (and said in the log): logins still work, only
    /// unknown users' salts then change at restart.
    fn mock_secret(&self) -> &str {
        self.mock_secret.get_or_init(|| {
            if let Ok(Some(stored)) = self.store.user(MOCK_SECRET_KEY) {
                if let Ok(s) = String::from_utf8(stored) {
                    if !s.is_empty() {
                        return s;
                    }
                }
            }
            // 2 × 18 random bytes, base64: 288 bits of secret.
            let secret = format!(
                "{}{}",
                pgwire::api::auth::sasl::scram::random_nonce(),
                pgwire::api::auth::sasl::scram::random_nonce()
            );
            let mut commit = Commit::new();
            commit.put_user(MOCK_SECRET_KEY, secret.clone().into_bytes());
            if let Err(e) = self.store.commit(commit) {
                tracing::warn!(
                    "cannot store the mock authentication secret, using one for this process: {e}"
                );
            }
            secret
        })
    }

    /// The verifier an unknown user is checked against: PostgreSQL's mock
    /// salt (deterministic in the secret and the name, shaped like a real
    /// salt: 18 bytes in base64) and a random salted password that no
    /// proof can match. Costs what a real verifier costs the exchange.
    fn mock_password(&self, name: &str) -> Password {
        use pgwire::api::auth::sasl::scram::{gen_salted_password, random_nonce};
        // PBKDF2-HMAC-SHA-256 with one iteration is HMAC keyed by the
        // secret over the name: a PRF, like PostgreSQL's
        // SHA-256(mock_auth_nonce || name).
        let digest = gen_salted_password(self.mock_secret(), name.as_bytes(), 1);
        let salt = base64(&digest[..18]).into_bytes();
        let doomed = gen_salted_password(&random_nonce(), &salt, 1);
        Password::new(Some(salt), doomed)
    }

    fn exists(&self, name: &str) -> SqlResult<bool> {
        Ok(self.store.user(name).map_err(store_error)?.is_some())
    }

    /// Creates user `name`, or sets its password when it exists.
    pub fn set_password(&self, name: &str, password: &str) -> SqlResult<()> {
        if password.is_empty() {
            return Err(SqlError::new(
                ErrorKind::InvalidParameterValue,
                "a password must not be empty",
            ));
        }
        let salt = pgwire::api::auth::sasl::scram::random_nonce().into_bytes();
        let verifier = Verifier {
            salted_password: pgwire::api::auth::sasl::scram::gen_salted_password(
                password, &salt, ITERATIONS,
            ),
            salt,
            iterations: ITERATIONS,
        };
        let record = serde_json::to_vec(&verifier)
            .map_err(|e| SqlError::internal(format!("encoding a user record: {e}")))?;
        let mut commit = Commit::new();
        commit.put_user(name, record);
        self.store.commit(commit).map_err(store_error)
    }

    /// `CREATE USER` / `CREATE ROLE`.
    pub fn create(
        &self,
        names: &[String],
        if_not_exists: bool,
        password: Option<&SqlPassword>,
    ) -> SqlResult<Outcome> {
        for name in names {
            if self.exists(name)? {
                if if_not_exists {
                    continue;
                }
                return Err(SqlError::new(
                    ErrorKind::DuplicateObject,
                    format!("role \"{name}\" already exists"),
                ));
            }
            let password = password_text(password)?.ok_or_else(|| {
                SqlError::new(
                    ErrorKind::FeatureNotSupported,
                    format!("role \"{name}\" needs a PASSWORD: users without one cannot log in"),
                )
            })?;
            self.set_password(name, &password)?;
        }
        Ok(command("CREATE ROLE"))
    }

    /// `ALTER USER name [WITH] PASSWORD '…'`.
    pub fn alter(&self, name: &str, operation: &AlterRoleOperation) -> SqlResult<Outcome> {
        if !self.exists(name)? {
            return Err(no_such_role(name));
        }
        let AlterRoleOperation::WithOptions { options } = operation else {
            return Err(SqlError::unsupported(
                "ALTER USER other than [WITH] PASSWORD",
            ));
        };
        for option in options {
            match option {
                RoleOption::Password(p) => {
                    let password = password_text(Some(p))?.ok_or_else(|| {
                        SqlError::unsupported("PASSWORD NULL (a user needs a password to log in)")
                    })?;
                    self.set_password(name, &password)?;
                }
                RoleOption::Login(true) => {}
                other => {
                    return Err(SqlError::unsupported(format!(
                        "the role option {other} (only PASSWORD is supported)"
                    )))
                }
            }
        }
        Ok(command("ALTER ROLE"))
    }

    /// `DROP USER` / `DROP ROLE`. The sessions of a dropped user end at
    /// their next statement (see [`Users::dropped_since`]).
    pub fn drop_users(&self, names: &[String], if_exists: bool) -> SqlResult<Outcome> {
        let mut commit = Commit::new();
        let mut gone = Vec::new();
        for name in names {
            if !self.exists(name)? {
                if if_exists {
                    continue;
                }
                return Err(no_such_role(name));
            }
            commit.delete_user(name);
            gone.push(name);
        }
        self.store.commit(commit).map_err(store_error)?;
        if !gone.is_empty() {
            // Recorded before the generation moves, so that a session that
            // sees the new generation finds the drop.
            let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
            let next = self.generation.load(Ordering::Acquire) + 1;
            for name in gone {
                dropped.insert(name.clone(), next);
            }
            self.generation.store(next, Ordering::Release);
        }
        Ok(command("DROP ROLE"))
    }
}

/// Standard base64 (RFC 4648, with padding), as pgwire encodes its salts.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn command(tag: &str) -> Outcome {
    Outcome::Command {
        tag: tag.to_string(),
        rows: None,
        oid: false,
    }
}

fn no_such_role(name: &str) -> SqlError {
    SqlError::new(
        ErrorKind::UndefinedObject,
        format!("role \"{name}\" does not exist"),
    )
}

fn password_text(p: Option<&SqlPassword>) -> SqlResult<Option<String>> {
    match p {
        None | Some(SqlPassword::NullPassword) => Ok(None),
        Some(SqlPassword::Password(Expr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Ok(Some(s.clone())),
            _ => Err(SqlError::new(
                ErrorKind::SyntaxError,
                "PASSWORD takes a string literal",
            )),
        },
        Some(_) => Err(SqlError::new(
            ErrorKind::SyntaxError,
            "PASSWORD takes a string literal",
        )),
    }
}

#[async_trait]
impl AuthSource for Users {
    /// The stored verifier of the startup's user; for an unknown user (or
    /// a record that cannot be used) a mock one, so that the exchange goes
    /// on to the same 28P01 a wrong password gets (PostgreSQL's "doomed"
    /// exchange): nothing the client sees tells the two apart.
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let record = match self.store.user(user) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(user, "reading a user for login: {e}");
                None
            }
        };
        let verifier = record.and_then(|r| match serde_json::from_slice::<Verifier>(&r) {
            Ok(v) if v.iterations == ITERATIONS && user != MOCK_SECRET_KEY => Some(v),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(user, "a stored user record cannot be read: {e}");
                None
            }
        });
        Ok(match verifier {
            Some(v) => Password::new(Some(v.salt), v.salted_password),
            None => self.mock_password(user),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 18]).len(), 24);
    }
}
