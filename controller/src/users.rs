//! The console's accounts (`clustermgr user ...`): made, listed, given a new password
//! or an API token, removed. The CLI hashes the password and makes the token where
//! they are typed and printed; what arrives here is the argon2id hash and the token's
//! digest, so neither crosses `serve`'s socket or reaches the store or the audit log.

use serde::{Deserialize, Serialize};

use crate::CtlError;
use crate::access::UserRole;
use crate::ctx::Ctx;
use crate::store::{TokenRecord, UserRecord};

/// The most API tokens one account keeps: an old one goes when a new one would pass it.
pub const MAX_TOKENS: usize = 8;

/// An account as `user list` shows it: never its hash or tokens' digests.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserView {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: UserRole,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When its password was last set (RFC 3339).
    pub password_set: String,
    /// Its API tokens' public names, oldest first.
    pub tokens: Vec<String>,
}

impl UserView {
    fn of(u: &UserRecord) -> UserView {
        UserView {
            name: u.name.clone(),
            role: u.role,
            created: crate::clock::rfc3339_ms(u.created_ms),
            password_set: crate::clock::rfc3339_ms(u.password_set_ms),
            tokens: u.tokens.iter().map(|t| t.id.clone()).collect(),
        }
    }
}

/// What a user operation returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum View {
    /// `user list`.
    Users(Vec<UserView>),
    /// `user add`, `user passwd`, `user remove`: the account after (none once removed)
    /// and a sentence.
    Done {
        /// What was done.
        said: String,
        /// The account, unless removed.
        user: Option<UserView>,
    },
    /// `user token`: the new token's public name (the token itself is only printed by
    /// the CLI that made it).
    Token {
        /// The account.
        user: String,
        /// The token's public name.
        id: String,
    },
}

/// Refuses a name that would not read well in a cookie, a log line or a URL: lower-case
/// letters, digits, `.`, `_`, `-` and `@`, starting with a letter or digit, at most 64.
pub fn check_name(name: &str) -> Result<(), CtlError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@')
        });
    if ok {
        Ok(())
    } else {
        Err(CtlError::BadArgument {
            flag: "NAME",
            value: name.to_string(),
            why: "an account name is 1 to 64 lower-case letters, digits, '.', '_', '-' or '@', starting with a letter or digit".into(),
        })
    }
}

fn unknown(name: &str) -> CtlError {
    CtlError::UnknownUser {
        name: name.to_string(),
    }
}

/// `user add NAME --role ROLE`.
pub fn add(
    ctx: &Ctx,
    who: &str,
    name: &str,
    role: UserRole,
    password_hash: &str,
) -> Result<View, CtlError> {
    check_name(name)?;
    let now = ctx.clock.unix_ms();
    let view = ctx.store.update_users(|users| {
        if users.iter().any(|u| u.name == name) {
            return Err(CtlError::UserExists {
                name: name.to_string(),
            });
        }
        let rec = UserRecord {
            name: name.to_string(),
            role,
            password_hash: password_hash.to_string(),
            created_ms: now,
            password_set_ms: now,
            tokens: Vec::new(),
        };
        let view = UserView::of(&rec);
        users.push(rec);
        Ok(view)
    })?;
    ctx.audit(who, "user add", &[], &format!("{name} as {role}"))?;
    Ok(View::Done {
        said: format!("console account {name} made, role {role}"),
        user: Some(view),
    })
}

/// `user passwd NAME`: a new password; the account's API tokens stay.
pub fn passwd(ctx: &Ctx, who: &str, name: &str, password_hash: &str) -> Result<View, CtlError> {
    let now = ctx.clock.unix_ms();
    let view = ctx.store.update_users(|users| {
        let u = users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| unknown(name))?;
        u.password_hash = password_hash.to_string();
        u.password_set_ms = now;
        Ok(UserView::of(u))
    })?;
    ctx.audit(who, "user passwd", &[], name)?;
    Ok(View::Done {
        said: format!("{name}'s password changed; its console sessions end"),
        user: Some(view),
    })
}

/// `user remove NAME`: the account and its tokens go; its sessions end.
pub fn remove(ctx: &Ctx, who: &str, name: &str) -> Result<View, CtlError> {
    ctx.store.update_users(|users| {
        let before = users.len();
        users.retain(|u| u.name != name);
        if users.len() == before {
            return Err(unknown(name));
        }
        Ok(())
    })?;
    ctx.audit(who, "user remove", &[], name)?;
    Ok(View::Done {
        said: format!("console account {name} removed, with its API tokens and sessions"),
        user: None,
    })
}

/// `user list`.
pub fn list(ctx: &Ctx) -> Result<View, CtlError> {
    Ok(View::Users(
        ctx.store.users()?.iter().map(UserView::of).collect(),
    ))
}

/// `user token NAME`: keeps a new token's digest (the oldest goes past
/// [`MAX_TOKENS`]).
pub fn token(ctx: &Ctx, who: &str, name: &str, sha256: &str) -> Result<View, CtlError> {
    let id = crate::password::token_id(sha256);
    let now = ctx.clock.unix_ms();
    ctx.store.update_users(|users| {
        let u = users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| unknown(name))?;
        u.tokens.push(TokenRecord {
            id: id.clone(),
            sha256: sha256.to_string(),
            created_ms: now,
        });
        let extra = u.tokens.len().saturating_sub(MAX_TOKENS);
        u.tokens.drain(..extra);
        Ok(())
    })?;
    ctx.audit(who, "user token", &[], &format!("{name}: token {id}"))?;
    Ok(View::Token {
        user: name.to_string(),
        id,
    })
}
