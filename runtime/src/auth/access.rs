//! What one caller may see and change of a model's records, below the model × operation
//! check of the authorization stage: the fields a field's `permissions: { read, write }`
//! keeps from it, and whether its right to an operation holds on every record or only on
//! the records it owns (the model's `owner_field` equals its subject, through the
//! pseudo-role `owner`).
//!
//! The endpoints build an [`Access`] per request from the route's model and operation and
//! the caller (a get takes it from the few a worker keeps, [`Access::with`]). It hides
//! fields from every answer built from records (the mask is applied where the JSON is
//! rendered, so a hidden value is never serialized), refuses filters and sorts on hidden
//! fields (403, so a filter cannot be used as an oracle), refuses writes of fields the
//! caller may not set (403 naming them), and narrows lists and item operations to the
//! caller's own records.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::Principal;
use crate::error::ApiError;
use crate::spec::{CompiledSpec, ModelSpec, Operation, OWNER};

/// What the caller may do with the records of one model, for one operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// Fields the caller does not see.
    hidden: Vec<String>,
    /// Fields the caller may not set or change (a field it does not see is among them);
    /// worked out for the operations whose bodies set fields (create, update, patch).
    fixed: Vec<String>,
    /// When the operation is granted only through `owner`: the owner field and the
    /// caller's subject, which a record's owner field must equal.
    own: Option<Own>,
    /// Whether the caller may read every record (for the 403-or-404 of an item write on
    /// a record of someone else).
    reads_all: bool,
    /// The model's owner field, and the subject a create fills it with (None for an
    /// anonymous caller, who owns nothing); worked out for a create.
    owner: Option<(String, Option<String>)>,
}

/// How many accesses a worker keeps ([`Access::with`]).
const KEPT: usize = 8;

/// An access a worker worked out, and what it was worked out for.
struct Kept {
    spec: Arc<CompiledSpec>,
    model: usize,
    op: Operation,
    /// None: anonymous.
    caller: Option<Arc<Principal>>,
    access: Access,
}

/// The accesses a worker keeps, replaced in turn once there are [`KEPT`].
#[derive(Default)]
struct Recent {
    entries: Vec<Kept>,
    next: usize,
}

impl Recent {
    /// Keeps `fresh`; answers where.
    fn keep(&mut self, fresh: Kept) -> usize {
        if self.entries.len() < KEPT {
            self.entries.push(fresh);
            return self.entries.len() - 1;
        }
        let at = self.next % KEPT;
        self.next = self.next.wrapping_add(1);
        self.entries[at] = fresh;
        at
    }
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// The records an operation granted through `owner` covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Own {
    /// The model's owner field.
    pub field: String,
    /// The caller's subject.
    pub subject: String,
}

/// How the caller holds an operation's roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Through a role other than `owner`: on every record.
    All,
    /// Only through `owner`: on the caller's own records.
    Own,
    /// Not at all.
    None,
}

/// How `who` holds `roles` on model `m`: `owner` counts for a caller with a subject (not
/// anonymous) on a model with an owner field.
pub fn grant(m: &ModelSpec, who: &Principal, roles: &[String]) -> Grant {
    if roles
        .iter()
        .any(|r| r != OWNER && who.may(std::slice::from_ref(r)))
    {
        Grant::All
    } else if m.owner_field.is_some() && !who.is_anonymous() && roles.iter().any(|r| r == OWNER) {
        Grant::Own
    } else {
        Grant::None
    }
}

impl Access {
    /// What `who` may do with `m`'s records in `op`.
    pub fn of(m: &ModelSpec, who: &Principal, op: Operation) -> Access {
        let allowed = |roles: Option<&[String]>| roles.is_none_or(|r| who.may(r));
        // A read works out only what it needs: every GET and list makes one.
        let sets = matches!(op, Operation::Create | Operation::Update | Operation::Patch);
        let mut hidden = Vec::new();
        let mut fixed = Vec::new();
        for f in &m.fields {
            if !allowed(f.read_roles()) {
                hidden.push(f.name.clone());
            }
            if sets && !allowed(f.write_roles()) {
                fixed.push(f.name.clone());
            }
        }
        let reads_all = grant(m, who, &m.permissions.read) == Grant::All;
        let own = match grant(m, who, m.permissions.for_op(op)) {
            Grant::Own => m.owner_field.as_ref().map(|field| Own {
                field: field.clone(),
                subject: who.name.clone(),
            }),
            _ => None,
        };
        // The owner field is set only by a caller that may update others' records.
        if let (true, Some(field)) = (sets, &m.owner_field) {
            let sets_owner = grant(m, who, &m.permissions.update) == Grant::All;
            if !sets_owner && !fixed.contains(field) {
                fixed.push(field.clone());
            }
        }
        let owner = m
            .owner_field
            .as_ref()
            .filter(|_| op == Operation::Create)
            .map(|field| {
                let subject = (!who.is_anonymous()).then(|| who.name.clone());
                (field.clone(), subject)
            });
        Access {
            hidden,
            fixed,
            own,
            reads_all,
            owner,
        }
    }

    /// Runs `f` with the access of `caller` (None: anonymous) to model number `model` of
    /// `spec` for `op`. Each worker keeps the accesses it worked out last (`KEPT` of
    /// them): an access depends only on these four, and a caller is the same `Arc` from
    /// request to request (an API token's), so a kept one is found by comparing
    /// addresses, without working it out again (which compares role names and copies the
    /// hidden fields' names). The entry holds the caller and the schema, so that their
    /// addresses name no other while it is kept.
    pub fn with<T>(
        spec: &Arc<CompiledSpec>,
        model: usize,
        caller: Option<&Arc<Principal>>,
        op: Operation,
        f: impl FnOnce(&Access) -> T,
    ) -> T {
        let m = &spec.spec.models[model];
        let who = || -> &Principal {
            match caller {
                Some(c) => c,
                None => Principal::shared_anonymous(),
            }
        };
        let same = |k: &Kept| {
            k.model == model
                && k.op == op
                && Arc::ptr_eq(&k.spec, spec)
                && match (&k.caller, caller) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        let mut f = Some(f);
        let kept = RECENT.try_with(|recent| {
            // Busy (an `f` that asks again): worked out without the table, below.
            let mut recent = recent.try_borrow_mut().ok()?;
            let at = match recent.entries.iter().position(same) {
                Some(at) => at,
                None => {
                    let fresh = Kept {
                        spec: spec.clone(),
                        model,
                        op,
                        caller: caller.cloned(),
                        access: Access::of(m, who(), op),
                    };
                    recent.keep(fresh)
                }
            };
            let f = f.take()?;
            Some(f(&recent.entries[at].access))
        });
        match (kept, f) {
            (Ok(Some(answer)), _) => answer,
            // The thread is ending, or the table is in use.
            (_, Some(f)) => f(&Access::of(m, who(), op)),
            (_, None) => unreachable!("an access's closure runs once"),
        }
    }

    /// Whether the caller sees `field`.
    pub fn sees(&self, field: &str) -> bool {
        !self.hidden.iter().any(|h| h == field)
    }

    /// The fields the caller does not see.
    pub fn hidden(&self) -> &[String] {
        &self.hidden
    }

    /// When the operation covers only the caller's records: which.
    pub fn own(&self) -> Option<&Own> {
        self.own.as_ref()
    }

    /// Whether a record is within the operation's reach; `value_of` answers the record's
    /// value of a field (asked only for the owner field, when the right is the owner's).
    pub fn covers(&self, value_of: impl FnOnce(&str) -> Option<Value>) -> bool {
        match &self.own {
            None => true,
            Some(own) => {
                value_of(&own.field).as_ref().and_then(Value::as_str) == Some(own.subject.as_str())
            }
        }
    }

    /// The refusal of an item operation on a record the caller does not own: 403 when it
    /// may read the record anyway, 404 when it may not know the record exists.
    pub fn not_yours(&self, model: &str, what: &str) -> ApiError {
        if self.reads_all {
            ApiError::forbidden(format!("only the owner of this {model} may {what} it"))
        } else {
            ApiError::not_found(format!("no {model} with this id"))
        }
    }

    /// 403 when a list's filters or sort name fields the caller does not see.
    pub fn check_query<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        if self.hidden.is_empty() {
            return Ok(());
        }
        let mut named: Vec<&str> = fields.into_iter().filter(|f| !self.sees(f)).collect();
        named.sort_unstable();
        named.dedup();
        if named.is_empty() {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "you may not filter or sort on {}",
            quoted(&named)
        )))
    }

    /// Prepares a create's body: 403 naming the fields it sets that the caller may not
    /// set, then the owner field filled with the caller's subject (unless a caller who
    /// may set it named another owner). Setting the owner field to one's own subject is
    /// no refusal: it is what the server writes anyway.
    pub fn prepare_create(&self, body: &mut Value) -> Result<(), ApiError> {
        let Value::Object(body) = body else {
            return Ok(());
        };
        let (owner, subject) = match &self.owner {
            Some((field, subject)) => (Some(field.as_str()), subject.as_deref()),
            None => (None, None),
        };
        let refused: Vec<&str> = self
            .fixed
            .iter()
            .filter(|f| match body.get(f.as_str()) {
                None => false,
                Some(v) => {
                    !(owner == Some(f.as_str()) && v.as_str().is_some_and(|v| Some(v) == subject))
                }
            })
            .map(String::as_str)
            .collect();
        refused_fields(&refused)?;
        if let (Some(field), Some(subject)) = (owner, subject) {
            if !body.contains_key(field) || matches!(body.get(field), Some(Value::Null)) {
                body.insert(field.to_string(), Value::String(subject.to_string()));
            }
        }
        Ok(())
    }

    /// The body of a PUT made whole for the caller: the fields it may not see or set keep
    /// their stored values when the body leaves them out (it cannot send what it does not
    /// see, and a replace must not clear what it may not change).
    pub fn complete_replace(&self, body: &mut Value, old: &Map<String, Value>) {
        let Value::Object(body) = body else { return };
        for f in self.hidden.iter().chain(&self.fixed) {
            if !body.contains_key(f) {
                if let Some(v) = old.get(f) {
                    body.insert(f.clone(), v.clone());
                }
            }
        }
    }

    /// 403 naming the fields the new record changes that the caller may not change.
    pub fn check_update(
        &self,
        new: &Map<String, Value>,
        old: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        let refused: Vec<&str> = self
            .fixed
            .iter()
            .filter(|f| new.get(f.as_str()) != old.get(f.as_str()))
            .map(String::as_str)
            .collect();
        refused_fields(&refused)
    }

    /// `value` with the fields the caller does not see removed: an object, or each
    /// object of an array (an action's answer).
    pub fn mask_value(&self, value: &mut Value) {
        if self.hidden.is_empty() {
            return;
        }
        let records: Vec<&mut Map<String, Value>> = match value {
            Value::Object(m) => vec![m],
            Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
            _ => Vec::new(),
        };
        for m in records {
            for h in &self.hidden {
                m.remove(h);
            }
        }
    }
}

/// 403 naming `fields`, each also in the problem's `errors`.
fn refused_fields(fields: &[&str]) -> Result<(), ApiError> {
    if fields.is_empty() {
        return Ok(());
    }
    let errors = fields
        .iter()
        .map(|f| crate::error::FieldError::new(*f, "forbidden", format!("you may not set `{f}`")))
        .collect();
    Err(ApiError::forbidden(format!("you may not set {}", quoted(fields))).with_errors(errors))
}

fn quoted(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `Item` with a field only admins read (`cost`) and one everyone reads (`name`).
    fn spec() -> Arc<CompiledSpec> {
        Arc::new(crate::spec::fixtures::item(
            r#"{"name": "name", "type": {"kind": "string"}},
               {"name": "cost", "type": {"kind": "float"}, "optional": true,
                "permissions": {"read": ["admin"], "write": ["admin"]}}"#,
        ))
    }

    fn caller(name: &str, roles: &[&str]) -> Arc<Principal> {
        let mut effective: BTreeSet<String> = roles.iter().map(|r| r.to_string()).collect();
        effective.insert("public".into());
        Arc::new(Principal {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            effective,
        })
    }

    #[test]
    fn a_kept_access_is_the_one_worked_out_for_the_same_caller_model_and_operation() {
        let spec = spec();
        let m = &spec.spec.models[0];
        let admin = caller("root", &["admin"]);
        let clerk = caller("clerk", &[]);
        // The same name with other roles is another caller: its own access.
        let clerk_as_admin = caller("clerk", &["admin"]);
        let callers = [Some(&admin), Some(&clerk), Some(&clerk_as_admin), None];
        let ops = [Operation::Get, Operation::Create, Operation::List];
        // Twice round every combination: more than the table keeps, so entries are
        // replaced, and each answer equals the one worked out afresh.
        for _ in 0..2 {
            for who in callers {
                for op in ops {
                    let fresh = Access::of(m, who.map_or(Principal::shared_anonymous(), |p| p), op);
                    let kept = Access::with(&spec, 0, who, op, |a| a.clone());
                    assert_eq!(kept, fresh, "{:?} {op:?}", who.map(|p| &p.roles));
                }
            }
        }
        let hidden = |who: Option<&Arc<Principal>>| {
            Access::with(&spec, 0, who, Operation::Get, |a| a.hidden().to_vec())
        };
        assert_eq!(hidden(Some(&admin)), Vec::<String>::new());
        assert_eq!(hidden(Some(&clerk)), vec!["cost".to_string()]);
        assert_eq!(hidden(Some(&clerk_as_admin)), Vec::<String>::new());
        assert_eq!(hidden(None), vec!["cost".to_string()]);
        // Another schema at work in the same thread (a reload, another service in a
        // test) is never answered from this one's entries.
        let other = Arc::new(crate::spec::fixtures::item(
            r#"{"name": "name", "type": {"kind": "string"},
                "permissions": {"read": ["admin"], "write": ["admin"]}}"#,
        ));
        let other_hidden = Access::with(&other, 0, Some(&clerk), Operation::Get, |a| {
            a.hidden().to_vec()
        });
        assert_eq!(other_hidden, vec!["name".to_string()]);
        // An access asked for within another's closure is worked out without the table.
        let nested = Access::with(&spec, 0, Some(&admin), Operation::Get, |outer| {
            let inner = Access::with(&spec, 0, Some(&clerk), Operation::Get, |a| a.clone());
            (outer.hidden().to_vec(), inner.hidden().to_vec())
        });
        assert_eq!(nested, (vec![], vec!["cost".to_string()]));
    }
}
