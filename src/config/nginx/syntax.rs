//! nginx configuration syntax: tokens (words, quoted strings with nginx's escapes, `;`, `{`, `}`,
//! `#` comments), directives `name args…;` and blocks, with `include` (relative to the including
//! file, glob patterns allowed) expanded in place. Knows nothing of what directives mean.

use super::{error_at, Origin, MAX_INCLUDE_DEPTH};
use crate::config::ConfigError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A word or a quoted string, unescaped.
    Word(String),
    Semicolon,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
}

/// One directive: `name args…;` or `name args… { block }`.
#[derive(Debug, Clone)]
pub(super) struct Directive {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) block: Option<Vec<Directive>>,
    pub(super) origin: Origin,
}

impl Directive {
    /// A label for messages: `location ~ /sub/(.*)`, `server`, `push_stream_publisher`.
    pub(super) fn label(&self) -> String {
        let mut label = self.name.clone();
        for arg in &self.args {
            label.push(' ');
            label.push_str(arg);
        }
        label
    }
}

/// Splits nginx config text into tokens. Quoted strings and words are unescaped the way nginx does:
/// `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other backslash pair is kept as written.
pub(super) fn tokenize(text: &str, file: &Arc<Path>) -> Result<Vec<Token>, ConfigError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |line| Origin {
        file: file.clone(),
        line,
    };
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while chars.get(i).is_some_and(|&c| c != '\n') {
                    i += 1;
                }
            }
            ';' | '{' | '}' => {
                let tok = match c {
                    ';' => Tok::Semicolon,
                    '{' => Tok::Open,
                    _ => Tok::Close,
                };
                tokens.push(Token { tok, line });
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                let mut raw = String::new();
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(error_at(
                            &at(start),
                            format!("unterminated quoted string: no closing {c} before the end of the file"),
                        ));
                    };
                    if ch == '\\' {
                        raw.push(ch);
                        if let Some(&next) = chars.get(i + 1) {
                            raw.push(next);
                            if next == '\n' {
                                line += 1;
                            }
                        }
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    raw.push(ch);
                }
                match chars.get(i) {
                    None | Some(' ' | '\t' | '\r' | '\n' | ';' | '{') => {}
                    Some(other) => {
                        return Err(error_at(
                            &at(line),
                            format!("unexpected \"{other}\" right after a quoted string; expected a space, \";\" or \"{{\""),
                        ))
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(unescape(&raw)),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                while let Some(&ch) = chars.get(i) {
                    match ch {
                        ' ' | '\t' | '\r' | '\n' | ';' => break,
                        // `${name}` keeps its brace; any other `{` opens a block.
                        '{' if !raw.ends_with('$') => break,
                        '\\' => {
                            raw.push(ch);
                            if let Some(&next) = chars.get(i + 1) {
                                raw.push(next);
                                if next == '\n' {
                                    line += 1;
                                }
                            }
                            i += 2;
                        }
                        _ => {
                            raw.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(unescape(&raw)),
                    line: start,
                });
            }
        }
    }
    Ok(tokens)
}

/// nginx's unescaping of a token.
pub(super) fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let replacement = match chars.peek() {
                Some(&q @ ('"' | '\'' | '\\')) => Some(q),
                Some('t') => Some('\t'),
                Some('r') => Some('\r'),
                Some('n') => Some('\n'),
                _ => None,
            };
            if let Some(r) = replacement {
                out.push(r);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Parses one file's text into directives, expanding `include`s.
pub(super) fn parse_text(
    text: &str,
    file: &Arc<Path>,
    depth: usize,
) -> Result<Vec<Directive>, ConfigError> {
    let tokens = tokenize(text, file)?;
    let last_line = text.lines().count().max(1);
    let mut pos = 0;
    let mut parser = Parser {
        tokens: &tokens,
        file,
        depth,
        last_line,
    };
    parser.block(&mut pos, None)
}

pub(super) struct Parser<'a> {
    pub(super) tokens: &'a [Token],
    pub(super) file: &'a Arc<Path>,
    pub(super) depth: usize,
    pub(super) last_line: usize,
}

impl Parser<'_> {
    pub(super) fn at(&self, line: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
    }

    /// Directives until the `}` closing `open` (name and line of the block), or the end of the file.
    pub(super) fn block(
        &mut self,
        pos: &mut usize,
        open: Option<(&str, usize)>,
    ) -> Result<Vec<Directive>, ConfigError> {
        let mut out = Vec::new();
        loop {
            let Some(token) = self.tokens.get(*pos) else {
                return match open {
                    Some((name, line)) => Err(error_at(
                        &self.at(self.last_line),
                        format!("unexpected end of file, expecting \"}}\" to close \"{name}\" opened at line {line}"),
                    )),
                    None => Ok(out),
                };
            };
            *pos += 1;
            let name = match &token.tok {
                Tok::Close if open.is_some() => return Ok(out),
                Tok::Close => return Err(error_at(&self.at(token.line), "unexpected \"}\"")),
                Tok::Semicolon => return Err(error_at(&self.at(token.line), "unexpected \";\"")),
                Tok::Open => return Err(error_at(&self.at(token.line), "unexpected \"{\"")),
                Tok::Word(name) => name.clone(),
            };
            let origin = self.at(token.line);
            let mut args = Vec::new();
            let block = loop {
                let Some(next) = self.tokens.get(*pos) else {
                    return Err(error_at(
                        &self.at(self.last_line),
                        format!("unexpected end of file, expecting \";\" or \"{{\" after \"{name}\" (line {})", origin.line),
                    ));
                };
                *pos += 1;
                match &next.tok {
                    Tok::Word(word) => args.push(word.clone()),
                    Tok::Semicolon => break None,
                    Tok::Open => break Some(self.block(pos, Some((&name, next.line)))?),
                    Tok::Close => {
                        return Err(error_at(
                            &self.at(next.line),
                            format!(
                            "unexpected \"}}\": \"{name}\" (line {}) is not terminated by \";\"",
                            origin.line
                        ),
                        ))
                    }
                }
            };
            let directive = Directive {
                name,
                args,
                block,
                origin,
            };
            if directive.name == "include" && directive.block.is_none() {
                out.extend(self.include(&directive)?);
            } else {
                out.push(directive);
            }
        }
    }

    /// The directives of the files an `include` names, in sorted order for glob patterns.
    pub(super) fn include(&self, directive: &Directive) -> Result<Vec<Directive>, ConfigError> {
        let origin = &directive.origin;
        let [pattern] = directive.args.as_slice() else {
            return Err(error_at(
                origin,
                "invalid number of arguments in \"include\" directive: expected one file or pattern",
            ));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(error_at(
                origin,
                format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"),
            ));
        }
        let full = resolve_relative(pattern, &origin.file);
        let files = if has_glob_chars(pattern) {
            glob_files(&full)
        } else {
            vec![full]
        };
        let mut out = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                error_at(
                    origin,
                    format!(
                        "include \"{}\": cannot open {}: {e}",
                        pattern,
                        path.display()
                    ),
                )
            })?;
            let file: Arc<Path> = Arc::from(path.as_path());
            out.extend(parse_text(&text, &file, self.depth + 1)?);
        }
        Ok(out)
    }
}

/// `path` as written, relative to the directory of `file` (the file that names it) when relative.
pub(super) fn resolve_relative(path: &str, file: &Path) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

pub(super) fn has_glob_chars(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The files matching an `include` pattern, sorted as glob(3) sorts them for nginx; names starting
/// with a dot match only a pattern that starts with one.
pub(super) fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let Ok(paths) = glob::glob_with(&pattern.to_string_lossy(), options) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
