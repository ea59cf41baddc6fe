//! Templates a team may override: the built-in ones, each replaced by the file of the same
//! name under a folder (`<dir>/<locale>/<name>` for what is written in a language, `<dir>/<name>`
//! for what is not), which may also add languages. Errors name the file and line.
//! email-service's emails and the gateway's pages both load this way.

use minijinja::Environment;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Which files a templates folder may hold; anything else is refused, since a misspelt name
/// would otherwise be ignored without a word.
pub struct Layout<'a> {
    /// The files of a language folder (`verification.txt`, `confirm.html`).
    pub per_locale: &'a [String],
    /// Templates at the folder's root, the same in every language (`layout.html`).
    pub shared: &'a [&'a str],
    /// Files at the root that the caller reads itself (`logo.svg`): not templates.
    pub assets: &'a [&'a str],
}

/// Built-in templates with a folder's overrides, in one environment that refuses undefined
/// variables (a variable a template names but is not given is an error, not "").
pub struct TemplateSet {
    pub env: Environment<'static>,
    /// Where each overriding template came from, by name (`de/verification.txt`).
    files: HashMap<String, PathBuf>,
    /// Every language some template is written in, sorted.
    pub locales: Vec<String>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet").field("locales", &self.locales).field("overrides", &self.files.len()).finish()
    }
}

impl TemplateSet {
    /// `built_in` (name, source) pairs, each replaced by its file under `dir` when there is
    /// one. minijinja escapes HTML in templates whose name ends in `.html`.
    pub fn load(
        built_in: impl IntoIterator<Item = (&'static str, &'static str)>,
        dir: Option<&Path>,
        layout: &Layout,
    ) -> Result<TemplateSet, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in built_in {
            env.add_template(name, source).map_err(|e| format!("built-in {name}: {e}"))?;
        }
        let mut files = HashMap::new();
        for (name, path, source) in dir.map(|dir| overrides(dir, layout)).transpose()?.unwrap_or_default() {
            env.add_template_owned(name.clone(), source).map_err(|e| at(&path, &e))?;
            files.insert(name, path);
        }
        // In a language folder, `{% include "form.html" %}` means that language's own
        // `form.html` when there is one, else the root's (`layout.html`).
        let names: std::collections::HashSet<String> = env.templates().map(|(name, _)| name.to_owned()).collect();
        env.set_path_join_callback(move |name, parent| match parent.split_once('/') {
            Some((locale, _)) if !name.contains('/') && names.contains(&format!("{locale}/{name}")) => {
                format!("{locale}/{name}").into()
            }
            _ => name.into(),
        });
        let mut locales: Vec<String> =
            env.templates().filter_map(|(name, _)| name.split_once('/').map(|(l, _)| l.to_owned())).collect();
        locales.sort();
        locales.dedup();
        Ok(TemplateSet { env, files, locales })
    }

    /// Whether the template `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders the template `name`; an error names the file and line of the template that
    /// failed (an included or extended one, maybe).
    pub fn render(&self, name: &str, context: &minijinja::Value) -> Result<String, String> {
        let rendered = self.env.get_template(name).and_then(|t| t.render(context));
        rendered.map_err(|e| self.problem(name, &e))
    }

    /// `e` (rendering `name`) at the file and line it is at.
    fn problem(&self, name: &str, e: &minijinja::Error) -> String {
        let failing = e.name().unwrap_or(name);
        match self.files.get(failing) {
            Some(path) => at(path, e),
            None => format!("built-in {failing}: {e}"),
        }
    }
}

/// The templates under `dir`, as (name, path, source): the root's shared ones, and each
/// language folder's. A folder that is not a canonical language tag, or a file the layout
/// does not name, is refused.
fn overrides(dir: &Path, layout: &Layout) -> Result<Vec<(String, PathBuf, String)>, String> {
    let refuse = |path: &Path, why: &str| format!("{}: {why}", path.display());
    let entries = |path: &Path| -> Result<Vec<PathBuf>, String> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| refuse(path, &e.to_string()))?
            .map(|entry| entry.map(|e| e.path()).map_err(|e| refuse(path, &e.to_string())))
            .collect::<Result<_, _>>()?;
        found.sort();
        Ok(found)
    };
    let file_name = |path: &Path| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| refuse(path, &e.to_string()));
    let mut templates = Vec::new();
    for entry in entries(dir)? {
        let name = file_name(&entry);
        if entry.is_file() && layout.shared.contains(&name.as_str()) {
            templates.push((name, entry.clone(), read(&entry)?));
            continue;
        }
        if entry.is_file() && layout.assets.contains(&name.as_str()) {
            continue;
        }
        if !entry.is_dir() || crate::locale::parse(&name) != Ok(Some(name.clone())) {
            let mut root: Vec<&str> = layout.shared.to_vec();
            root.extend(layout.assets);
            let files = if root.is_empty() { String::new() } else { format!(" or one of {}", root.join(", ")) };
            return Err(refuse(&entry, &format!("is not a folder named by a language tag such as de or pt-BR{files}")));
        }
        for file in entries(&entry)? {
            let file_name = file_name(&file);
            if !layout.per_locale.contains(&file_name) {
                let known = layout.per_locale.join(", ");
                return Err(refuse(&file, &format!("is not a template: a language folder holds {known}")));
            }
            templates.push((format!("{name}/{file_name}"), file.clone(), read(&file)?));
        }
    }
    Ok(templates)
}

/// A template's error at its file and line: `path:line: problem`.
fn at(path: &Path, e: &minijinja::Error) -> String {
    let line = e.line().map(|line| format!(":{line}")).unwrap_or_default();
    let problem = e.detail().map_or_else(|| e.kind().to_string(), |detail| format!("{}: {detail}", e.kind()));
    format!("{}{line}: {problem}", path.display())
}
