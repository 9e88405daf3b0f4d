//! The engine's own tests: plan and apply agree, sets are all or nothing, crashes at
//! each journaled phase are finished or undone at the next start.

use std::path::Path;

use clustermgr_protocol::changeset::{Action, ServiceVerb, Validator};
use clustermgr_protocol::message::{Command, ErrorKind};

use super::*;

struct Sandbox {
    _t: tempfile::TempDir,
    root: PathBuf,
    engine: Engine,
}

fn sandbox(extra: &str) -> Sandbox {
    sandbox_with_roots(extra, &["/etc/app"])
}

/// A sandbox whose writable roots are `roots` (paths below its root).
fn sandbox_with_roots(extra: &str, roots: &[&str]) -> Sandbox {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    let roots: Vec<String> = roots
        .iter()
        .map(|r| format!("\"{}\"", root.join(r.trim_start_matches('/')).display()))
        .collect();
    let text = format!(
        "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwritable_roots = [{}]\n{extra}",
        t.path().join("state").display(),
        root.display(),
        roots.join(", "),
    );
    let cfg = AgentConfig::parse(Path::new("agent.toml"), &text).unwrap();
    Sandbox {
        engine: Engine::new(Arc::new(cfg)),
        root,
        _t: t,
    }
}

fn file(path: &str, text: &str) -> Entry {
    Entry {
        path: path.into(),
        scope: Scope::Host,
        content: Content::File {
            bytes: text.as_bytes().to_vec(),
            mode: 0o640,
            owner: None,
            group: None,
        },
        secret: false,
        validate: None,
        on_change: Vec::new(),
    }
}

fn set(entries: Vec<Entry>) -> ChangeSet {
    ChangeSet {
        revision: 1,
        entries,
        requested_by: "test".into(),
    }
}

fn shell(line: &str) -> Command {
    Command::Shell(line.into())
}

impl Sandbox {
    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(p.trim_start_matches('/'))).ok()
    }
    fn write(&self, p: &str, text: &str) {
        let path = self.root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    fn chmod(&self, p: &str, mode: u32) {
        let path = self.root.join(p.trim_start_matches('/'));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("etc/app"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }
}

#[test]
fn plan_and_apply_agree_and_a_second_apply_changes_nothing() {
    let s = sandbox("");
    s.write("/etc/app/b.conf", "old\n");
    let cs = set(vec![
        file("/etc/app/a.conf", "a\n"),
        file("/etc/app/b.conf", "new\n"),
    ]);
    let plan = s.engine.plan(&cs).unwrap();
    assert_eq!(plan[0].change, Change::Create);
    assert_eq!(plan[1].change, Change::Modify);
    // A file this agent never wrote: its text stays on the node.
    assert_eq!(plan[1].old_text, None);
    let report = s.engine.apply(&cs).unwrap();
    assert_eq!(report.result, ApplyResult::Applied);
    assert_eq!(report.entries, plan, "apply reports what the plan said");
    assert_eq!(s.read("/etc/app/b.conf").as_deref(), Some("new\n"));
    let meta = std::fs::metadata(s.root.join("etc/app/a.conf")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let again = s.engine.plan(&cs).unwrap();
    assert!(
        again.iter().all(|p| p.change == Change::Unchanged),
        "{again:?}"
    );
    assert_eq!(s.engine.apply(&cs).unwrap().result, ApplyResult::Unchanged);
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

#[test]
fn a_mode_change_alone_is_metadata_and_runs_the_actions() {
    let s = sandbox("");
    let marker = s.root.join("etc/app/ran");
    let mut e = file("/etc/app/a.conf", "a\n");
    e.on_change = vec![Action::Command(shell(&format!(
        "echo x >> {}",
        marker.display()
    )))];
    s.engine.apply(&set(vec![e.clone()])).unwrap();
    if let Content::File { mode, .. } = &mut e.content {
        *mode = 0o600;
    }
    let plan = s.engine.plan(&set(vec![e.clone()])).unwrap();
    assert_eq!(plan[0].change, Change::Metadata);
    s.engine.apply(&set(vec![e.clone()])).unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\nx\n");
    s.engine.apply(&set(vec![e])).unwrap();
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\nx\n",
        "unchanged: no action"
    );
}

#[test]
fn a_failing_validator_puts_every_file_back() {
    let s = sandbox("");
    s.write("/etc/app/a.conf", "a1\n");
    s.write("/etc/app/b.conf", "b1\n");
    let mut b = file("/etc/app/b.conf", "b2\n");
    b.validate = Some(Validator::Command(shell(
        "echo checked {}; grep -q good {}",
    )));
    let cs = set(vec![
        file("/etc/app/a.conf", "a2\n"),
        b,
        file("/etc/app/c.conf", "c\n"),
    ]);
    let report = s.engine.apply(&cs).unwrap();
    let ApplyResult::RolledBack { step, output, .. } = &report.result else {
        panic!("{report:?}");
    };
    assert!(step.contains("validate /etc/app/b.conf"), "{step}");
    assert!(
        output.contains("checked") && output.contains("exit status 1"),
        "{output}"
    );
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("a1\n"));
    assert_eq!(s.read("/etc/app/b.conf").as_deref(), Some("b1\n"));
    assert_eq!(
        s.read("/etc/app/c.conf"),
        None,
        "a created file is removed again"
    );
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    let backups = s.engine.backups("/etc/app/a.conf", &Scope::Host).unwrap();
    assert!(
        backups.is_empty(),
        "an undone apply leaves no backup: {backups:?}"
    );
}

#[test]
fn a_failing_action_rolls_back_and_runs_the_actions_again() {
    let s = sandbox("");
    s.write("/etc/app/a.conf", "good\n");
    let log = s.root.join("etc/app/log");
    let mut a = file("/etc/app/a.conf", "bad\n");
    a.on_change = vec![Action::Command(shell(&format!(
        "cat {0} >> {1}; grep -q good {0}",
        s.root.join("etc/app/a.conf").display(),
        log.display()
    )))];
    let report = s.engine.apply(&set(vec![a])).unwrap();
    assert!(
        matches!(
            report.result,
            ApplyResult::RolledBack {
                restored_cleanly: true,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("good\n"));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "bad\ngood\n");
}

#[test]
fn secrets_never_come_back_as_text() {
    let s = sandbox("");
    s.write("/etc/app/key", "old-secret\n");
    let mut e = file("/etc/app/key", "new-secret\n");
    e.secret = true;
    let plan = s.engine.plan(&set(vec![e.clone()])).unwrap();
    assert_eq!(plan[0].change, Change::Modify);
    assert!(plan[0].old_text.is_none() && plan[0].new_text.is_none());
    let report = s.engine.apply(&set(vec![e])).unwrap();
    assert!(!format!("{report:?}").contains("secret\n"), "{report:?}");
}

#[test]
fn edits_touch_only_their_part() {
    let s = sandbox("");
    s.write(
        "/etc/app/ldap.properties",
        "bindPassword: hush\nservers: a:1636\n",
    );
    s.write("/etc/app/hosts", "127.0.0.1 localhost\n");
    let prop = Entry {
        content: Content::Property {
            key: "servers".into(),
            value: "b:1636,a:1636".into(),
        },
        ..file("/etc/app/ldap.properties", "")
    };
    let block = Entry {
        content: Content::Block {
            name: "hosts".into(),
            body: "10.0.0.1 a\n".into(),
        },
        ..file("/etc/app/hosts", "")
    };
    let waiting = Entry {
        content: Content::Property {
            key: "k".into(),
            value: "v".into(),
        },
        ..file("/etc/app/absent.properties", "")
    };
    let cs = set(vec![prop, block, waiting]);
    let plan = s.engine.plan(&cs).unwrap();
    // Not written by this agent yet: the line it replaces is not sent back.
    assert_eq!(plan[0].old_text, None);
    assert_eq!(
        plan[0].new_text.as_deref(),
        Some("servers: b:1636,a:1636\n")
    );
    assert!(!format!("{plan:?}").contains("hush"));
    assert_eq!(plan[2].change, Change::Waiting);
    s.engine.apply(&cs).unwrap();
    assert_eq!(
        s.read("/etc/app/ldap.properties").as_deref(),
        Some("bindPassword: hush\nservers: b:1636,a:1636\n")
    );
    assert!(
        s.read("/etc/app/hosts")
            .unwrap()
            .contains("10.0.0.1 a\n# END")
    );
    assert_eq!(s.read("/etc/app/absent.properties"), None);
}

#[test]
fn without_allow_exec_only_built_in_steps_are_accepted() {
    let s = sandbox_with_roots("allow_exec = false\n", &["/etc/app", "/etc/cron.d"]);
    let mut e = file("/etc/app/a.conf", "a\n");
    e.on_change = vec![Action::Command(shell("true"))];
    let err = s.engine.plan(&set(vec![e.clone()])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(
        err.message.contains("allow_exec = false"),
        "{}",
        err.message
    );
    assert!(s.engine.apply(&set(vec![e])).is_err());
    assert_eq!(s.read("/etc/app/a.conf"), None);
    // So is a file that something runs later: an executable, a cron job.
    let mut exe = file("/etc/app/tool", "#!/bin/sh\n");
    if let Content::File { mode, .. } = &mut exe.content {
        *mode = 0o755;
    }
    for e in [exe, file("/etc/cron.d/job", "* * * * * root id\n")] {
        let err = s.engine.apply(&set(vec![e])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused, "{}", err.message);
        assert!(
            err.message.contains("run as a command later"),
            "{}",
            err.message
        );
    }
    // A built-in service action is allowed; under a sandbox root it is not run, since
    // the machine's own nginx is not the sandbox's.
    let mut e = file("/etc/app/a.conf", "a\n");
    e.on_change = vec![Action::Service {
        name: "nginx".into(),
        verb: ServiceVerb::Reload,
    }];
    e.validate = Some(Validator::Nginx);
    let r = s.engine.apply(&set(vec![e])).unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
    let steps: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "nginx -t -c /etc/app/a.conf (sandbox: not run)",
            "reload nginx (sandbox: not run)"
        ]
    );
    // So are the trust-store import and the restart of installed services: fixed
    // programs with fixed arguments.
    let mut e = file("/etc/app/a.conf", "b\n");
    e.on_change = vec![
        Action::JavaTrust {
            alias: "idp.example.org_httpd".into(),
            cert: "/etc/app/a.conf".into(),
        },
        Action::RestartInstalled {
            services: vec!["apache2".into()],
        },
    ];
    let r = s.engine.apply(&set(vec![e])).unwrap();
    assert_eq!(r.result, ApplyResult::Applied, "{r:?}");
    let steps: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "trust /etc/app/a.conf in Java's cacerts as idp.example.org_httpd (sandbox: not run)",
            "restart apache2 (sandbox: not run)"
        ]
    );
}

#[test]
fn bad_entries_change_nothing_and_name_every_problem() {
    let s = sandbox("");
    let cs = set(vec![
        file("/etc/app/ok.conf", "x"),
        file("/etc/other/x", "x"),
        file("/etc/app/../x", "x"),
    ]);
    let err = s.engine.apply(&cs).unwrap_err();
    assert!(
        err.message.contains("/etc/other/x: is outside"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("/etc/app/../x: is not normalized"),
        "{}",
        err.message
    );
    assert_eq!(s.read("/etc/app/ok.conf"), None);
}

#[test]
fn backups_are_kept_pruned_and_restorable() {
    let s = sandbox("");
    for i in 0..8 {
        s.engine
            .apply(&set(vec![file("/etc/app/a.conf", &format!("v{i}\n"))]))
            .unwrap();
    }
    let list = s.engine.backups("/etc/app/a.conf", &Scope::Host).unwrap();
    assert_eq!(list.len(), KEEP_BACKUPS);
    assert_eq!(list[0].generation, 1);
    assert_eq!(list[0].sha256, sha256_hex(b"v6\n"));
    let spec = RestoreSpec {
        path: "/etc/app/a.conf".into(),
        scope: Scope::Host,
        generation: 2,
        validate: None,
        on_change: Vec::new(),
        requested_by: "t".into(),
    };
    let r = s.engine.restore(&spec).unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("v5\n"));
    let err = s
        .engine
        .restore(&RestoreSpec {
            generation: 9,
            ..spec
        })
        .unwrap_err();
    assert!(
        err.message.contains("no backup generation 9"),
        "{}",
        err.message
    );
}

/// Runs an apply's phases by hand up to `stop`, as a crash there would leave them.
fn crash_at(s: &Sandbox, cs: &ChangeSet, stop: Phase, swapped: usize) {
    let staged = s.engine.stage_all(&cs.entries).unwrap();
    let changed: Vec<&Staged> = staged.iter().filter(|x| x.plan.change.writes()).collect();
    std::fs::create_dir_all(&s.engine.dir).unwrap();
    let actions: Vec<StepSpec> = cs
        .entries
        .iter()
        .flat_map(|e| e.on_change.iter())
        .flat_map(|a| step::action_steps(a, &Scope::Host, &s.root, &s.root, &|_| false).unwrap())
        .map(|st| StepSpec::from(&st))
        .collect();
    let mut txn = Txn {
        id: 7,
        revision: 1,
        phase: Phase::Staging,
        items: changed
            .iter()
            .map(|c| Item {
                real: c.res.real.clone(),
                temp: temp_beside(&c.res.real, 7, ""),
                backup: c
                    .old
                    .as_ref()
                    .map(|_| s.engine.backups.next_counter(&c.res.real)),
            })
            .collect(),
        actions,
    };
    s.engine.write_txn(&txn).unwrap();
    s.engine.stage_files(&txn, &changed).unwrap();
    if stop == Phase::Staging {
        return;
    }
    txn.phase = Phase::Swapping;
    s.engine.write_txn(&txn).unwrap();
    for item in txn.items.iter().take(swapped) {
        std::fs::rename(&item.temp, &item.real).unwrap();
    }
    if stop == Phase::Swapping {
        return;
    }
    txn.phase = stop;
    s.engine.write_txn(&txn).unwrap();
}

#[test]
fn a_crash_before_the_actions_leaves_the_old_set() {
    for (phase, swapped) in [
        (Phase::Staging, 0),
        (Phase::Swapping, 1),
        (Phase::Swapping, 3),
    ] {
        let s = sandbox("");
        s.write("/etc/app/a.conf", "a1\n");
        s.write("/etc/app/b.conf", "b1\n");
        let cs = set(vec![
            file("/etc/app/a.conf", "a2\n"),
            file("/etc/app/b.conf", "b2\n"),
            file("/etc/app/c.conf", "c2\n"),
        ]);
        crash_at(&s, &cs, phase, swapped);
        let what = s.engine.recover().expect("a journal to recover");
        assert!(what.contains("revision 1"), "{what}");
        assert_eq!(
            s.read("/etc/app/a.conf").as_deref(),
            Some("a1\n"),
            "{phase:?}"
        );
        assert_eq!(
            s.read("/etc/app/b.conf").as_deref(),
            Some("b1\n"),
            "{phase:?}"
        );
        assert_eq!(s.read("/etc/app/c.conf"), None, "{phase:?}");
        assert!(s.leftovers().is_empty(), "{phase:?}: {:?}", s.leftovers());
        assert!(s.engine.recover().is_none(), "the journal is gone");
        assert!(
            s.engine
                .backups("/etc/app/a.conf", &Scope::Host)
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn a_crash_during_the_actions_keeps_the_new_set_and_runs_them_again() {
    let s = sandbox("");
    s.write("/etc/app/a.conf", "a1\n");
    let log = s.root.join("etc/app/log");
    let mut a = file("/etc/app/a.conf", "a2\n");
    a.on_change = vec![Action::Command(shell(&format!(
        "echo ran >> {}",
        log.display()
    )))];
    let cs = set(vec![a, file("/etc/app/b.conf", "b2\n")]);
    crash_at(&s, &cs, Phase::Acting, 2);
    let what = s.engine.recover().unwrap();
    assert!(what.contains("completed"), "{what}");
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("a2\n"));
    assert_eq!(s.read("/etc/app/b.conf").as_deref(), Some("b2\n"));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
    assert_eq!(
        s.engine
            .backups("/etc/app/a.conf", &Scope::Host)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_journal_left_behind_is_settled_before_the_next_apply() {
    let s = sandbox("");
    s.write("/etc/app/a.conf", "a1\n");
    let cs = set(vec![file("/etc/app/a.conf", "a2\n")]);
    // A set in place whose journal says Swapping (its next journal write failed): the
    // next apply must not take the disk as it finds it and leave that journal to undo
    // it at some later start.
    crash_at(&s, &cs, Phase::Swapping, 1);
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("a2\n"));
    let r = s.engine.apply(&cs).unwrap();
    assert_eq!(
        r.result,
        ApplyResult::Applied,
        "the earlier set was undone first"
    );
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("a2\n"));
    assert!(s.engine.recover().is_none(), "no journal is left");
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("a2\n"));
}

#[test]
fn a_link_planted_at_a_temp_name_is_never_written_through() {
    let s = sandbox("");
    let victim = s.root.join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let temp = temp_beside(&s.root.join("etc/app/a.conf"), 7, "");
    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    write_temp(
        &temp,
        b"new\n",
        &Meta {
            mode: 0o644,
            uid: own_ids().0,
            gid: own_ids().1,
        },
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    assert_eq!(std::fs::read_to_string(&temp).unwrap(), "new\n");
    assert!(
        !std::fs::symlink_metadata(&temp)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_directory_swapped_for_a_link_after_the_check_is_never_written_through() {
    let s = sandbox("");
    let elsewhere = s.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("a.conf"), "theirs\n").unwrap();
    let app = s.root.join("etc/app");
    let real = app.join("a.conf");
    let temp = temp_beside(&real, 9, "");
    let meta = Meta {
        mode: 0o644,
        uid: own_ids().0,
        gid: own_ids().1,
    };
    write_temp(&temp, b"ours\n", &meta).unwrap();
    // The swap happens between the check (and the staging) and the rename.
    std::fs::rename(&app, s.root.join("etc/app.moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &app).unwrap();
    let err = rename_into_place(&temp, &real).unwrap_err();
    assert!(
        err.to_string().contains("replaced by a symlink"),
        "unexpected error: {err}"
    );
    let err = write_temp(&temp, b"ours\n", &meta).unwrap_err();
    assert!(err.to_string().contains("replaced by a symlink"), "{err}");
    assert!(read_nofollow(&real).is_err());
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("a.conf")).unwrap(),
        "theirs\n"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
}

#[test]
fn an_older_revision_is_refused_once_a_newer_one_applied() {
    let s = sandbox("");
    let set = |revision: u64, text: &str| ChangeSet {
        revision,
        entries: vec![file("/etc/app/a.conf", text)],
        requested_by: "test".into(),
    };
    assert_eq!(
        s.engine.apply(&set(7, "seven\n")).unwrap().result,
        ApplyResult::Applied
    );
    let late = s.engine.apply(&set(6, "six\n")).unwrap();
    assert_eq!(late.result, ApplyResult::Stale { applied: 7 });
    assert_eq!(s.read("/etc/app/a.conf").as_deref(), Some("seven\n"));
    // The same revision again is fine (a retry), and so is a later one.
    assert_eq!(
        s.engine.apply(&set(7, "seven\n")).unwrap().result,
        ApplyResult::Unchanged
    );
    assert_eq!(
        s.engine.apply(&set(8, "eight\n")).unwrap().result,
        ApplyResult::Applied
    );
}

#[test]
fn a_host_key_that_is_not_a_key_is_reported_with_its_path() {
    let s = sandbox("");
    let node = clustermgr_protocol::NodeName::new("n1").unwrap();
    let first = s.engine.host_key("/etc/app/host.key", &Scope::Host, &node);
    assert!(first.unwrap().contains("CERTIFICATE REQUEST"));
    std::fs::write(s.root.join("etc/app/host.key"), "junk\n").unwrap();
    let err = s
        .engine
        .host_key("/etc/app/host.key", &Scope::Host, &node)
        .unwrap_err();
    assert!(
        err.message.contains("not a usable private key"),
        "{}",
        err.message
    );
    assert!(err.message.contains("host.key"), "{}", err.message);
}

fn with_mode(mut e: Entry, m: u32) -> Entry {
    if let Content::File { mode, .. } = &mut e.content {
        *mode = m;
    }
    e
}

fn refused(s: &Sandbox, entries: Vec<Entry>, why: &str) {
    let cs = set(entries);
    for err in [
        s.engine.plan(&cs).unwrap_err(),
        s.engine.apply(&cs).unwrap_err(),
    ] {
        assert_eq!(err.kind, ErrorKind::Refused, "{}", err.message);
        assert!(err.message.contains(why), "{why:?} not in {}", err.message);
    }
}

#[test]
fn a_plan_sends_back_only_text_this_agent_wrote_that_others_may_read_and_no_secret() {
    let s = sandbox("");
    s.write("/etc/app/b.conf", "theirs\n");
    s.chmod("/etc/app/b.conf", 0o644);
    let plan = s
        .engine
        .plan(&set(vec![file("/etc/app/b.conf", "x\n")]))
        .unwrap();
    assert_eq!(plan[0].old_text, None, "never written by this agent");
    // Once written, a world-readable file's text is shown.
    s.engine
        .apply(&set(vec![with_mode(
            file("/etc/app/b.conf", "ours\n"),
            0o644,
        )]))
        .unwrap();
    let plan = s
        .engine
        .plan(&set(vec![file("/etc/app/b.conf", "x\n")]))
        .unwrap();
    assert_eq!(plan[0].old_text.as_deref(), Some("ours\n"));
    // Not readable by others: kept.
    s.engine
        .apply(&set(vec![with_mode(
            file("/etc/app/c.conf", "ours\n"),
            0o640,
        )]))
        .unwrap();
    let plan = s
        .engine
        .plan(&set(vec![file("/etc/app/c.conf", "x\n")]))
        .unwrap();
    assert_eq!(plan[0].old_text, None, "mode 0640");
    // A known secret path (the container's shadow file, Gluu's salt), whoever wrote it.
    for p in ["/etc/app/etc/shadow", "/etc/app/etc/gluu/conf/salt"] {
        s.engine
            .apply(&set(vec![with_mode(file(p, "ours\n"), 0o644)]))
            .unwrap();
        let plan = s.engine.plan(&set(vec![file(p, "x\n")])).unwrap();
        assert_eq!(plan[0].old_text, None, "{p}");
    }
    // An edit's line follows the same rule: someone else's line stays on the node.
    s.write("/etc/app/l.properties", "bindPassword: hush\n");
    s.chmod("/etc/app/l.properties", 0o644);
    let edit = Entry {
        content: Content::Property {
            key: "bindPassword".into(),
            value: "x".into(),
        },
        ..file("/etc/app/l.properties", "")
    };
    let plan = s.engine.plan(&set(vec![edit])).unwrap();
    assert_eq!(plan[0].old_text, None);
    assert!(!format!("{plan:?}").contains("hush"));
    // A block not there yet says nothing of the file: its empty old part is shown.
    let block = Entry {
        content: Content::Block {
            name: "hosts".into(),
            body: "10.0.0.1 a\n".into(),
        },
        ..file("/etc/app/l.properties", "")
    };
    let plan = s.engine.plan(&set(vec![block])).unwrap();
    assert_eq!(plan[0].old_text.as_deref(), Some(""));
}

#[test]
fn without_allow_exec_an_entry_is_judged_where_the_kernel_opens_it() {
    let s = sandbox_with_roots("allow_exec = false\n", &["/etc/app", "/opt/gluu-server"]);
    std::fs::create_dir_all(s.root.join("opt/gluu-server/etc/cron.d")).unwrap();
    std::fs::create_dir_all(s.root.join("opt/gluu-server/etc/init.d")).unwrap();
    let container = Scope::Container {
        root: "/opt/gluu-server".into(),
    };
    // The container's cron, from the host's scope and from the container's.
    refused(
        &s,
        vec![file(
            "/opt/gluu-server/etc/cron.d/job",
            "* * * * * root id\n",
        )],
        "run as a command later",
    );
    refused(
        &s,
        vec![Entry {
            scope: container.clone(),
            ..file("/etc/cron.d/job", "* * * * * root id\n")
        }],
        "run as a command later",
    );
    // A link in a harmless place to an init script.
    std::os::unix::fs::symlink(
        "/opt/gluu-server/etc/init.d/oxauth",
        s.root.join("etc/app/innocent.conf"),
    )
    .unwrap();
    refused(
        &s,
        vec![file("/etc/app/innocent.conf", "x\n")],
        "/opt/gluu-server/etc/init.d/oxauth on the host",
    );
    assert!(!s.root.join("opt/gluu-server/etc/init.d/oxauth").exists());
    // With exec allowed, the same cron file is an ordinary write.
    let open = sandbox_with_roots("", &["/opt/gluu-server"]);
    let r = open
        .engine
        .apply(&set(vec![file("/opt/gluu-server/etc/cron.d/job", "x\n")]))
        .unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
}

#[test]
fn without_allow_exec_files_that_root_sources_or_the_kernel_obeys_are_refused() {
    // Init scripts and units' EnvironmentFile source /etc/default/NAME as shell code;
    // a sysctl file's kernel.core_pattern = |program runs the program as root.
    let s = sandbox_with_roots(
        "allow_exec = false\n",
        &["/etc/default", "/etc/sysctl.d", "/opt/gluu-server"],
    );
    for dir in ["etc/default", "etc/sysctl.d"] {
        std::fs::create_dir_all(s.root.join("opt/gluu-server").join(dir)).unwrap();
    }
    let container = Scope::Container {
        root: "/opt/gluu-server".into(),
    };
    for (path, text) in [
        ("/etc/default/x", "X=$(id)\n"),
        ("/etc/sysctl.d/x.conf", "kernel.core_pattern = |/tmp/x\n"),
    ] {
        refused(&s, vec![file(path, text)], "run as a command later");
        refused(
            &s,
            vec![file(&format!("/opt/gluu-server{path}"), text)],
            "run as a command later",
        );
        refused(
            &s,
            vec![Entry {
                scope: container.clone(),
                ..file(path, text)
            }],
            "run as a command later",
        );
        assert!(!s.root.join(&path[1..]).exists(), "{path}");
        assert!(
            !s.root.join("opt/gluu-server").join(&path[1..]).exists(),
            "{path}"
        );
    }
}

#[test]
fn without_allow_exec_an_edit_of_an_executable_is_refused() {
    let s = sandbox("allow_exec = false\n");
    s.write("/etc/app/run.sh", "#!/bin/sh\nA=1\n# BEGIN x\n# END x\n");
    s.chmod("/etc/app/run.sh", 0o755);
    let prop = Entry {
        content: Content::Property {
            key: "A".into(),
            value: "1; id".into(),
        },
        ..file("/etc/app/run.sh", "")
    };
    let block = Entry {
        content: Content::Block {
            name: "x".into(),
            body: "id\n".into(),
        },
        ..file("/etc/app/run.sh", "")
    };
    refused(&s, vec![prop], "an edit of an executable");
    refused(&s, vec![block], "an edit of an executable");
    assert_eq!(
        s.read("/etc/app/run.sh").as_deref(),
        Some("#!/bin/sh\nA=1\n# BEGIN x\n# END x\n")
    );
    // Replacing it with a file nobody can run is allowed.
    let r = s
        .engine
        .apply(&set(vec![with_mode(file("/etc/app/run.sh", "x\n"), 0o644)]))
        .unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
}

#[test]
fn without_allow_exec_nginx_may_not_load_code_a_push_could_write() {
    let s = sandbox_with_roots("allow_exec = false\n", &["/etc/nginx", "/opt/mods"]);
    s.write("/opt/mods/evil.so", "\x7fELF...");
    s.write("/usr/lib/nginx/modules/ok.so", "\x7fELF...");
    let conf = |text: &str| Entry {
        validate: Some(Validator::Nginx),
        ..file("/etc/nginx/nginx.conf", text)
    };
    // A shared object, by its bytes or its name.
    refused(
        &s,
        vec![file("/etc/nginx/m.so", "\x7fELF\x02")],
        "shared object",
    );
    refused(&s, vec![file("/etc/nginx/m.so.1", "x")], "shared object");
    // A module from a writable root, directly, through an include, or in the set.
    refused(
        &s,
        vec![conf("load_module /opt/mods/evil.so;\nevents {}\n")],
        "load_module /opt/mods/evil.so loads a module from where config pushes write",
    );
    s.write(
        "/etc/nginx/conf.d/x.conf",
        "load_module \"/opt/mods/evil.so\";\n",
    );
    refused(
        &s,
        vec![conf("include /etc/nginx/conf.d/*.conf;\n")],
        "/etc/nginx/conf.d/x.conf: load_module",
    );
    std::fs::remove_file(s.root.join("etc/nginx/conf.d/x.conf")).unwrap();
    refused(
        &s,
        vec![
            conf("include conf.d/*.conf;\n"),
            file(
                "/etc/nginx/conf.d/new.conf",
                "load_module /opt/mods/new.so;\n",
            ),
        ],
        "load_module /opt/mods/new.so",
    );
    refused(
        &s,
        vec![conf("perl_modules /opt/mods;\n")],
        "`perl_modules`",
    );
    // A reload without a validator reads the main configuration, which includes it.
    s.write(
        "/etc/nginx/nginx.conf",
        "include /etc/nginx/conf.d/*.conf;\n",
    );
    refused(
        &s,
        vec![Entry {
            on_change: vec![Action::Service {
                name: "nginx".into(),
                verb: ServiceVerb::Reload,
            }],
            ..file(
                "/etc/nginx/conf.d/y.conf",
                "load_module /opt/mods/evil.so;\n",
            )
        }],
        "load_module /opt/mods/evil.so",
    );
    // The distribution's modules, outside every writable root, load as before.
    let r = s
        .engine
        .apply(&set(vec![conf(
            "load_module /usr/lib/nginx/modules/ok.so;\nevents {}\n",
        )]))
        .unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
}

#[test]
fn without_allow_exec_nginx_may_not_load_a_module_someone_else_could_have_put_there() {
    let s = sandbox_with_roots("allow_exec = false\n", &["/etc/nginx"]);
    let conf = |module: &str| Entry {
        validate: Some(Validator::Nginx),
        ..file(
            "/etc/nginx/nginx.conf",
            &format!("load_module {module};\nevents {{}}\n"),
        )
    };
    // A module others may write, or in a directory others may write.
    for (module, open, why) in [
        (
            "/usr/lib/nginx/modules/open.so",
            "/usr/lib/nginx/modules/open.so",
            "load_module /usr/lib/nginx/modules/open.so: ",
        ),
        (
            "/opt/shared/m.so",
            "/opt/shared",
            "opt/shared is writable by others than its owner",
        ),
    ] {
        s.write(module, "\x7fELF...");
        s.chmod(open, 0o777);
        refused(&s, vec![conf(module)], why);
    }
    // A module a local user dropped into /tmp (sticky and open to all): the directory
    // is fine, the file is not the agent's or root's.
    s.write("/tmp/evil.so", "\x7fELF...");
    s.chmod("/tmp", 0o1777);
    let running_as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if running_as_root {
        std::os::unix::fs::chown(s.root.join("tmp/evil.so"), Some(65534), Some(65534)).unwrap();
        refused(&s, vec![conf("/tmp/evil.so")], "owned by uid 65534");
    }
    // One that is not there.
    refused(
        &s,
        vec![conf("/usr/lib/nginx/modules/gone.so")],
        "cannot be read",
    );
    assert_eq!(s.read("/etc/nginx/nginx.conf"), None);
}

#[test]
fn a_gluu_without_a_container_is_planned_and_applied_on_the_host() {
    let s = sandbox("");
    s.write("/etc/app/gluu-ldap.properties", "servers: a:1636\n");
    let e = Entry {
        scope: Scope::Container { root: "/".into() },
        content: Content::Property {
            key: "servers".into(),
            value: "b:1636".into(),
        },
        ..file("/etc/app/gluu-ldap.properties", "")
    };
    let plan = s.engine.plan(&set(vec![e.clone()])).unwrap();
    assert_eq!(plan[0].change, Change::Modify);
    let r = s.engine.apply(&set(vec![e])).unwrap();
    assert_eq!(r.result, ApplyResult::Applied);
    assert_eq!(
        s.read("/etc/app/gluu-ldap.properties").as_deref(),
        Some("servers: b:1636\n")
    );
}
