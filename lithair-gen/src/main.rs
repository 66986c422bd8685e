//! The `lithair-gen` command: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anstream::{eprint, eprintln, print, println};
use anstyle::{AnsiColor, Style};
use clap::{CommandFactory, Parser, Subcommand};
use lithair_gen::project::{self, ApplyOptions, Change, Plan, PlanOptions, ProjectError, Refusal};
use lithair_gen::render::Owner;

mod watch;

const GREEN: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green)));
const YELLOW: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));
const RED: Style = Style::new()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)))
    .bold();
const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();

/// Generates a complete Rust service crate from a YAML model definition, and regenerates
/// it safely: your handler code is never overwritten.
#[derive(Parser)]
#[command(name = "lithair-gen", version, about, long_about = None, after_help = "\
Examples:
  lithair-gen new shop --schema examples/shop.yaml   create a service crate
  cd shop && lithair-gen run                         build and start it
  lithair-gen generate                               regenerate after editing lithair.yaml
  lithair-gen validate my.yaml                       check a schema only")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ProjectArg {
    /// The project folder (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
}

#[derive(clap::Args, Clone, Default)]
struct RuntimeArgs {
    /// Depend on the lithair-runtime in this folder (default: the checkout lithair-gen was built from).
    #[arg(long, value_name = "DIR", conflicts_with = "runtime_version")]
    runtime_path: Option<PathBuf>,
    /// Depend on this published version of lithair-runtime instead of a path.
    #[arg(long, value_name = "VERSION")]
    runtime_version: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a service crate from a schema (copied into it as lithair.yaml).
    #[command(
        after_help = "Examples:\n  lithair-gen new shop --schema examples/shop.yaml\n  lithair-gen new shop --schema examples/shop.yaml --handlers examples/shop   # with the example's code\n  cd shop && cargo run -- serve"
    )]
    New {
        /// The folder to create (must not exist, or be empty).
        dir: PathBuf,
        /// The YAML model definition.
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        /// Start from the handler files in DIR (`<model>.rs`, like an example's) instead
        /// of the stubs.
        #[arg(long, value_name = "DIR")]
        handlers: Option<PathBuf>,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Regenerate the project from its lithair.yaml; your files are never touched.
    #[command(
        after_help = "Examples:\n  lithair-gen generate\n  lithair-gen generate --dry-run --project shop\n  lithair-gen generate --force            # overwrite generated files edited by hand"
    )]
    Generate {
        #[command(flatten)]
        project: ProjectArg,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite (or remove) generated files that were edited by hand.
        #[arg(long)]
        force: bool,
        /// Accept schema changes that stored records cannot follow.
        #[arg(long)]
        allow_breaking: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Exit 1 if generated files are stale or were edited by hand (for CI).
    #[command(
        after_help = "Example:\n  lithair-gen check --project shop || echo 'run lithair-gen generate'"
    )]
    Check {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Show a unified diff of what `generate` would change.
    #[command(after_help = "Example:\n  lithair-gen diff | less")]
    Diff {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// List each file with its owner and state (generated, user, modified, stale).
    #[command(after_help = "Example:\n  lithair-gen status --project shop")]
    Status {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Check a schema file and report every problem with its line and column.
    #[command(after_help = "Example:\n  lithair-gen validate examples/shop.yaml")]
    Validate {
        /// The YAML model definition.
        file: PathBuf,
    },
    /// Print the API's documentation for a schema (what a project keeps in docs/API.md):
    /// endpoints, who may do what, each model's fields, and a mermaid diagram.
    #[command(after_help = "Example:\n  lithair-gen docs examples/shop.yaml > API.md")]
    Docs {
        /// The YAML model definition.
        file: PathBuf,
    },
    /// Print the JSON Schema of the YAML language (for editor completion).
    #[command(after_help = "Example:\n  lithair-gen schema > schemas/lithair-model.schema.json")]
    Schema,
    /// Generate if needed, then build and start the service (the dev loop).
    #[command(
        after_help = "Examples:\n  lithair-gen run\n  lithair-gen run --watch\n  lithair-gen run -- --port 9000"
    )]
    Run {
        #[command(flatten)]
        project: ProjectArg,
        /// Build in release mode.
        #[arg(long)]
        release: bool,
        /// Watch lithair.yaml, src/ and templates/: regenerate, rebuild and restart on every
        /// change; a broken schema or build keeps the last good service running.
        #[arg(long)]
        watch: bool,
        /// Arguments for `serve` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  lithair-gen completions bash > /etc/bash_completion.d/lithair-gen"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(ProjectError::Schema(text)) => {
            eprint!("{text}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{RED}error:{RED:#} {e}");
            ExitCode::from(1)
        }
    }
}

fn plan_options(r: &RuntimeArgs) -> PlanOptions {
    PlanOptions {
        runtime_path: r.runtime_path.clone(),
        runtime_version: r.runtime_version.clone(),
    }
}

fn run(command: Command) -> Result<ExitCode, ProjectError> {
    match command {
        Command::New {
            dir,
            schema,
            handlers,
            runtime,
        } => {
            let plan = project::create_with_handlers(
                &dir,
                &schema,
                handlers.as_deref(),
                &plan_options(&runtime),
                true,
            )?;
            finish_generate(&plan, ApplyOptions::default(), false)?;
            println!(
                "\nnext: {BOLD}cd {} && cargo run -- serve{BOLD:#}   (or `lithair-gen run --project {}`)",
                dir.display(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            project,
            dry_run,
            force,
            allow_breaking,
            runtime,
        } => {
            let plan = project::plan(&project.project, &plan_options(&runtime), true)?;
            finish_generate(
                &plan,
                ApplyOptions {
                    force,
                    allow_breaking,
                },
                dry_run,
            )
        }
        Command::Check { project } => {
            let plan = project::plan(&project.project, &PlanOptions::default(), true)?;
            if plan.is_stale() {
                if plan.schema_changed {
                    println!(
                        "{YELLOW}stale{YELLOW:#}    lithair.yaml changed since the last generate"
                    );
                }
                for f in &plan.files {
                    let why = match &f.change {
                        Change::Create if f.owner == Owner::Generated => "missing",
                        Change::Create => "missing (yours, would be created)",
                        Change::Update => "out of date",
                        Change::Delete => "no longer produced",
                        Change::Conflict(why) => why.as_str(),
                        _ => continue,
                    };
                    println!("{YELLOW}stale{YELLOW:#}    {}  {DIM}({why}){DIM:#}", f.path);
                }
                println!("run `lithair-gen generate` to bring the project up to date");
                Ok(ExitCode::from(1))
            } else {
                println!("{GREEN}up to date{GREEN:#}: every generated file matches lithair.yaml");
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Diff { project } => {
            let plan = project::plan(&project.project, &PlanOptions::default(), true)?;
            for f in &plan.files {
                if matches!(
                    f.change,
                    Change::Create
                        | Change::Update
                        | Change::Reformat
                        | Change::Delete
                        | Change::Conflict(_)
                ) {
                    print!("{}", project::unified_diff(f));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { project } => {
            let plan = project::plan(&project.project, &PlanOptions::default(), true)?;
            status(&plan);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ProjectError::Other(format!("cannot read {}: {e}", file.display())))?;
            let schema = project::check_schema(&file.display().to_string(), &text, true)?;
            let fields: usize = schema.models.iter().map(|m| m.fields.len()).sum();
            let projections = match schema.projections.len() {
                0 => String::new(),
                1 => ", 1 projection".to_string(),
                n => format!(", {n} projections"),
            };
            println!(
                "{GREEN}ok{GREEN:#}: {} is valid ({} models, {fields} fields{projections})",
                file.display(),
                schema.models.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Docs { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ProjectError::Other(format!("cannot read {}: {e}", file.display())))?;
            let schema = project::check_schema(&file.display().to_string(), &text, true)?;
            let openapi = lithair_gen::render::openapi::document(&schema);
            print!(
                "{}",
                lithair_gen::render::api_docs::document(&schema, &openapi)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print!("{}", lithair_gen::schema::language::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            project,
            release,
            watch: true,
            args,
        } => watch::run(&project.project, release, &args),
        Command::Run {
            project,
            release,
            watch: false,
            args,
        } => run_service(&project.project, release, &args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lithair-gen",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn finish_generate(
    plan: &Plan,
    opts: ApplyOptions,
    dry_run: bool,
) -> Result<ExitCode, ProjectError> {
    if let Some(note) = &plan.previous_schema_note {
        eprintln!("{YELLOW}note:{YELLOW:#} {note}");
    }
    for note in plan.handler_notes() {
        eprintln!("{YELLOW}note:{YELLOW:#} {note}");
    }
    for change in &plan.data_changes {
        println!("stored data: {change}");
    }
    if dry_run {
        print_changes(plan, "would ");
        if plan.conflicts().next().is_some() && !opts.force {
            println!("{YELLOW}generate would refuse{YELLOW:#}: generated files were edited by hand (see above)");
        }
        if !plan.breaking.is_empty() {
            print_breaking(plan);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match project::apply(plan, opts)? {
        Ok(()) => {
            print_changes(plan, "");
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::HandEdits(paths)) => {
            for f in plan.conflicts() {
                eprint!("{}", project::unified_diff(f));
            }
            eprintln!("{RED}error:{RED:#} refusing to overwrite generated files edited by hand:");
            for p in &paths {
                eprintln!("  {p}");
            }
            eprintln!("the diff above shows what generate would write. Move your code to src/handlers/ (yours, never overwritten),");
            eprintln!("then run `lithair-gen generate --force` to restore the generated files. Nothing was written.");
            Ok(ExitCode::from(1))
        }
        Err(Refusal::Breaking(_)) => {
            print_breaking(plan);
            eprintln!("{RED}error:{RED:#} these schema changes break records already stored. Nothing was written.");
            eprintln!("fix the schema, or run `lithair-gen generate --allow-breaking` to accept what is said above.");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_breaking(plan: &Plan) {
    eprintln!(
        "{YELLOW}breaking changes{YELLOW:#} against the last generate (.lithair/schema.prev.yaml):"
    );
    for b in &plan.breaking {
        eprintln!("  - {}: {}", b.change, b.consequence);
    }
}

fn print_changes(plan: &Plan, would: &str) {
    let mut counts = [0usize; 4];
    for f in &plan.files {
        let (word, style, idx) = match &f.change {
            Change::Create => ("create", GREEN, 0),
            Change::Update | Change::Reformat => ("update", YELLOW, 1),
            Change::Delete => ("remove", YELLOW, 2),
            Change::Conflict(_) => ("overwrite", RED, 1),
            Change::Orphaned => {
                println!(
                    "  {YELLOW}unused{YELLOW:#}   {}  {DIM}(model {} was removed; your file is left in place){DIM:#}",
                    f.path,
                    f.model.as_deref().unwrap_or("?")
                );
                continue;
            }
            Change::KeptModified => {
                println!("  {YELLOW}kept{YELLOW:#}     {}  {DIM}(no longer generated, but edited by hand){DIM:#}", f.path);
                continue;
            }
            _ => {
                counts[3] += 1;
                continue;
            }
        };
        counts[idx] += 1;
        let verb = if would.is_empty() {
            match word {
                "create" => "created".to_string(),
                "update" => "updated".to_string(),
                "remove" => "removed".to_string(),
                _ => "overwrote".to_string(),
            }
        } else {
            format!("{would}{word}")
        };
        println!("  {style}{verb:<9}{style:#} {}", f.path);
    }
    println!(
        "{BOLD}{}{BOLD:#}: {} created, {} updated, {} removed, {} unchanged",
        if would.is_empty() {
            "generated"
        } else {
            "dry run"
        },
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
}

fn status(plan: &Plan) {
    for f in &plan.files {
        let (state, style) = match (&f.change, f.owner) {
            (Change::Unchanged, Owner::Generated) => ("generated", GREEN),
            (Change::Reformat, _) => ("generated (reformatted)", GREEN),
            (Change::Update, _) => ("stale", YELLOW),
            (Change::Create, Owner::Generated) => ("missing", YELLOW),
            (Change::Create, Owner::User) => ("missing (yours; generate recreates it)", YELLOW),
            (Change::Conflict(_), _) => ("modified", RED),
            (Change::Delete, _) => ("stale (no longer generated)", YELLOW),
            (Change::KeptModified, _) => ("modified (no longer generated)", RED),
            (Change::Orphaned, _) => ("user (model removed)", YELLOW),
            (_, _) => ("user", BOLD),
        };
        println!("{style}{state:<12}{style:#} {}", f.path);
    }
    for o in &plan.overrides {
        println!(
            "{YELLOW}{:<12}{YELLOW:#} {o}  {DIM}(overrides the built-in template){DIM:#}",
            "template"
        );
    }
    for o in &plan.unknown_overrides {
        println!(
            "{YELLOW}{:<12}{YELLOW:#} templates/{o}  {DIM}(matches no template; ignored){DIM:#}",
            "unknown"
        );
    }
    if plan.schema_changed {
        println!("lithair.yaml changed since the last generate: run `lithair-gen generate`");
    }
}

fn run_service(dir: &Path, release: bool, args: &[String]) -> Result<ExitCode, ProjectError> {
    let plan = project::plan(dir, &PlanOptions::default(), true)?;
    if plan.is_stale() {
        let code = finish_generate(&plan, ApplyOptions::default(), false)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).arg("run");
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--").arg("serve").args(args);
    let status = cmd
        .status()
        .map_err(|e| ProjectError::Other(format!("cannot start cargo: {e}")))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
    })
}
