//! Logging in with a password, as PostgreSQL does it:
//!
//! - a known user with a wrong password and an unknown user are told apart
//!   by nothing a client sees: the same SCRAM exchange (an unknown user gets
//!   a mock salt, see `millrace_engine::users`), the same final
//!   `FATAL: password authentication failed for user "NAME"` (28P01);
//! - failed logins are logged at warn, with the peer address and the user,
//!   once when a burst from an address starts and then as a count (a
//!   password-guessing client cannot flood the log);
//! - a session whose user is dropped ends at its next statement with
//!   `FATAL: role "NAME" does not exist` (28000); a password change leaves
//!   the sessions of the user alone.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::Sink;
use millrace_engine::error::{ErrorKind, SqlError, SqlResult};
use millrace_engine::users::Users;
use millrace_planner::statement::Statement;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::{ClientInfo, PgWireConnectionState, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::sqlstate;

/// Password login of one connection: pgwire's SCRAM exchange, with
/// PostgreSQL's failure message, failure logging, and the session record
/// that [`check_session`] reads.
pub struct PasswordLogin {
    handler: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    users: Arc<Users>,
    /// The users' drop generation when the Startup message came: a user
    /// dropped after it (even during the exchange) ends the session.
    since: AtomicU64,
}

impl PasswordLogin {
    /// Login through `handler`, checked against `users`.
    pub fn new(
        handler: SASLAuthStartupHandler<DefaultServerParameterProvider>,
        users: Arc<Users>,
    ) -> Self {
        Self {
            handler,
            users,
            since: AtomicU64::new(0),
        }
    }

    /// One startup message: passed to the exchange, its failure made
    /// PostgreSQL's and logged, its success recorded for [`check_session`].
    pub async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(message, PgWireFrontendMessage::Startup(_)) {
            self.since.store(self.users.generation(), Ordering::Release);
        }
        let result = self.handler.on_startup(client, message).await;
        let user = || {
            client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default()
        };
        match result {
            // pgwire names the user of the SCRAM message, which libpq and
            // most drivers leave empty: the startup's user is the one.
            Err(PgWireError::InvalidPassword(_)) => {
                let user = user();
                FAILURES.record(client.socket_addr().ip(), &user);
                Err(password_failed(&user))
            }
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                if client.session_extensions().get::<Session>().is_none() {
                    let generation = self.since.load(Ordering::Acquire);
                    client.session_extensions().insert(Session {
                        user: user(),
                        users: self.users.clone(),
                        since: generation,
                        checked: AtomicU64::new(generation),
                    });
                }
                Ok(())
            }
            other => other,
        }
    }
}

/// PostgreSQL's answer to a wrong password or an unknown user (the same
/// for both, so that it tells nothing about which users exist).
fn password_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        sqlstate::INVALID_PASSWORD.to_owned(),
        format!("password authentication failed for user \"{user}\""),
    )))
}

/// Who a password session logged in as (a session extension; trust
/// sessions have none, so [`check_session`] lets them be).
struct Session {
    user: String,
    users: Arc<Users>,
    /// The drop generation its login started at.
    since: u64,
    /// The last drop generation found not to concern this session.
    checked: AtomicU64,
}

/// Before each statement: ends a session whose user has been dropped with
/// PostgreSQL's `FATAL: role "NAME" does not exist` (28000); pgwire then
/// closes the connection. One atomic load when no user has been dropped
/// since the last check, an in-memory lookup otherwise.
pub(crate) fn check_session<C: ClientInfo>(client: &C) -> PgWireResult<()> {
    let Some(session) = client.session_extensions().get::<Session>() else {
        return Ok(());
    };
    let now = session.users.generation();
    if now == session.checked.load(Ordering::Acquire) {
        return Ok(());
    }
    if session.users.dropped_since(&session.user, session.since) {
        return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".to_owned(),
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION.to_owned(),
            format!("role \"{}\" does not exist", session.user),
        ))));
    }
    session.checked.store(now, Ordering::Release);
    Ok(())
}

/// Refuses `DROP USER` / `DROP ROLE` of the session's own user, as
/// PostgreSQL does (`current user cannot be dropped`, 55006), rather than
/// leave a session that would end at its next statement.
pub(crate) fn refuse_dropping_self<C: ClientInfo>(client: &C, stmt: &Statement) -> SqlResult<()> {
    use sqlparser::ast::{ObjectType, Statement as Sql};
    let Statement::Sql(sql) = stmt else {
        return Ok(());
    };
    let Sql::Drop {
        object_type: ObjectType::Role | ObjectType::User,
        names,
        ..
    } = sql.as_ref()
    else {
        return Ok(());
    };
    let Some(user) = client.metadata().get(METADATA_USER) else {
        return Ok(());
    };
    if names
        .iter()
        .any(|n| millrace_engine::object_name(n) == *user)
    {
        return Err(SqlError::new(
            ErrorKind::ObjectInUse,
            "current user cannot be dropped",
        ));
    }
    Ok(())
}

/// A burst ends when an address has had no failed login for this long;
/// the next failure from it is logged again in full.
const QUIET: Duration = Duration::from_secs(5);

/// While a burst goes on, its count is logged this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Addresses followed one by one; failures from more addresses at once
/// are counted together (an attacker with many addresses must not grow
/// the map, nor the log, without bound).
const MAX_ADDRESSES: usize = 1024;

/// User names a summary lists (the rest are only counted).
const MAX_NAMES: usize = 8;

/// The failed logins of this process, by peer address.
static FAILURES: LazyLock<Arc<Failures>> = LazyLock::new(Default::default);

/// A user name as a log line shows it: quoted, escaped (a name is the
/// client's to choose: a newline in it must not forge a log line), and
/// cut at PostgreSQL's 63 characters.
fn shown(user: &str) -> String {
    let cut: String = user.chars().take(63).collect();
    if cut.len() < user.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Bursts of failed logins; `None` holds the addresses beyond
/// [`MAX_ADDRESSES`].
#[derive(Default)]
struct Failures {
    bursts: Mutex<HashMap<Option<IpAddr>, Burst>>,
}

struct Burst {
    /// When the burst's first failure came.
    started: Instant,
    /// When its last failure came.
    last: Instant,
    /// Its failures so far, the first one included.
    failures: u64,
    /// Failures already accounted for in the log.
    logged: u64,
    /// When its count was last logged.
    summarized: Instant,
    /// Some of the user names tried.
    users: BTreeSet<String>,
}

impl Failures {
    /// Counts a failed login of `user` from `ip`; logs it if it starts a
    /// burst (and then a task logs the burst's count when it is over).
    fn record(self: &Arc<Self>, ip: IpAddr, user: &str) {
        let now = Instant::now();
        let mut bursts = self.bursts.lock().unwrap_or_else(|e| e.into_inner());
        let key = if bursts.contains_key(&Some(ip)) || bursts.len() < MAX_ADDRESSES {
            Some(ip)
        } else {
            None
        };
        if let Some(burst) = bursts.get_mut(&key) {
            burst.failures += 1;
            burst.last = now;
            if burst.users.len() < MAX_NAMES {
                burst.users.insert(user.to_owned());
            }
            return;
        }
        let peer = key.map_or_else(|| "other addresses".to_owned(), |ip| ip.to_string());
        let shown = shown(user);
        tracing::warn!(
            %peer,
            user = %shown,
            "password authentication failed for user {shown} from {peer} \
             (further failures from {peer} are counted until it has been quiet for {} s)",
            QUIET.as_secs()
        );
        bursts.insert(
            key,
            Burst {
                started: now,
                last: now,
                failures: 1,
                logged: 1,
                summarized: now,
                users: BTreeSet::from([user.to_owned()]),
            },
        );
        drop(bursts);
        let failures = self.clone();
        tokio::spawn(async move { failures.summarize(key, peer).await });
    }

    /// Logs the count of burst `key` every [`SUMMARY_EVERY`] while it goes
    /// on, and once more (if anything is left to say) when it is over.
    async fn summarize(&self, key: Option<IpAddr>, peer: String) {
        let mut wait = QUIET;
        loop {
            tokio::time::sleep(wait).await;
            let now = Instant::now();
            let mut bursts = self.bursts.lock().unwrap_or_else(|e| e.into_inner());
            let Some(burst) = bursts.get_mut(&key) else {
                return;
            };
            let quiet_for = now.duration_since(burst.last);
            let over = quiet_for >= QUIET;
            if over || now.duration_since(burst.summarized) >= SUMMARY_EVERY {
                if burst.failures > burst.logged {
                    let users = burst.users.iter().map(|u| shown(u)).collect::<Vec<_>>();
                    let users = users.join(", ");
                    tracing::warn!(
                        %peer,
                        failures = burst.failures,
                        "{} failed logins from {peer} in {} s (users: {users}){}",
                        burst.failures,
                        burst.last.duration_since(burst.started).as_secs(),
                        if over { "" } else { ", still going on" }
                    );
                }
                burst.logged = burst.failures;
                burst.summarized = now;
            }
            if over {
                bursts.remove(&key);
                return;
            }
            // Wake when the burst would be over, or its count due.
            let to_summary = SUMMARY_EVERY.saturating_sub(now.duration_since(burst.summarized));
            wait = (QUIET - quiet_for)
                .min(to_summary)
                .max(Duration::from_millis(100));
        }
    }
}
