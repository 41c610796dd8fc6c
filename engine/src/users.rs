//! Users and their passwords, for password (SCRAM-SHA-256) authentication.
//!
//! A user's password is never stored: the record holds a SCRAM verifier
//! (a random salt and the salted password, PBKDF2-SHA-256), which is what
//! the SCRAM exchange needs to check a client's proof. Users are managed
//! with `CREATE USER name [WITH] PASSWORD '…'` (or `CREATE ROLE … LOGIN
//! PASSWORD`), `ALTER USER name [WITH] PASSWORD '…'` and `DROP USER`; each
//! change is a durable commit.

use std::sync::Arc;

use async_trait::async_trait;
use millrace_storage::{Commit, Store};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
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

/// The users of a data directory.
#[derive(Clone)]
pub struct Users {
    store: Store,
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
        Arc::new(Self { store })
    }

    /// True when no user exists yet.
    pub fn is_empty(&self) -> SqlResult<bool> {
        Ok(self.store.user_names().map_err(store_error)?.is_empty())
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

    /// `DROP USER` / `DROP ROLE`.
    pub fn drop_users(&self, names: &[String], if_exists: bool) -> SqlResult<Outcome> {
        let mut commit = Commit::new();
        for name in names {
            if !self.exists(name)? {
                if if_exists {
                    continue;
                }
                return Err(no_such_role(name));
            }
            commit.delete_user(name);
        }
        self.store.commit(commit).map_err(store_error)?;
        Ok(command("DROP ROLE"))
    }
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
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default().to_string();
        // An unknown user fails like a wrong password (28P01), without
        // telling which of the two it was.
        let failed = || PgWireError::InvalidPassword(user.clone());
        let record = self
            .store
            .user(&user)
            .map_err(|_| failed())?
            .ok_or_else(failed)?;
        let verifier: Verifier = serde_json::from_slice(&record).map_err(|_| failed())?;
        if verifier.iterations != ITERATIONS {
            return Err(failed());
        }
        Ok(Password::new(Some(verifier.salt), verifier.salted_password))
    }
}
