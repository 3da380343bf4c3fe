//! Wildcard patterns matched against a whole string: the one matcher behind both dialects' `LIKE`.
//! Owns the compilation of Python's `fnmatch` globs (Cobra: `*`, `?`, `[...]` classes, read exactly as
//! Python 3.8's `fnmatch.translate` and `re` read them) and of SQL `LIKE` patterns (native: `%`, `_`,
//! an optional escape character), and the matching itself. Knows nothing of JSON.

/// A compiled pattern: the runs of single-character atoms between `AnyRun`s, which must cover the
/// whole text in order. Matching places the first run at the start (unless the pattern starts with
/// `AnyRun`), the last at the end (unless it ends with one), and each other run at its leftmost
/// occurrence after the previous one — which is optimal for such patterns, and linear in the text
/// for runs of literals (`%png`, `%error%`); a run holding `_`/`?` or a class costs at most its
/// length per text position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    /// Never empty: a pattern without `AnyRun` is one run.
    runs: Box<[Run]>,
    /// Whether the pattern has an `AnyRun` at all (between, before or after the runs).
    open_start: bool,
    open_end: bool,
}

/// Consecutive single-character atoms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    atoms: Box<[Atom]>,
    /// The run as a string when every atom is a literal: searched with `str::find`.
    literal: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    /// One given character.
    Literal(char),
    /// Any one character (`?`, `_`).
    AnyChar,
    /// Any run of characters, empty included (`*`, `%`).
    AnyRun,
    /// One character of (or, negated, not of) a set of inclusive ranges (`[a-c]`, `[!x]`).
    Class {
        negated: bool,
        ranges: Box<[(char, char)]>,
    },
}

/// A glob class that Python's `re` refuses (a reversed range such as `[z-a]`): Cobra raises when it
/// matches with it, so every evaluation that reaches it is unevaluable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadRange;

/// A SQL `LIKE` pattern that ends with its escape character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DanglingEscape;

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Literal(l) => *l == c,
            Atom::AnyChar => true,
            // Runs never hold an AnyRun; it would match any character.
            Atom::AnyRun => true,
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

impl Pattern {
    fn new(atoms: Vec<Atom>) -> Pattern {
        let open_start = atoms.first() == Some(&Atom::AnyRun);
        let open_end = atoms.last() == Some(&Atom::AnyRun);
        let mut runs: Vec<Run> = atoms
            .split(|atom| *atom == Atom::AnyRun)
            .filter(|run| !run.is_empty())
            .map(Run::new)
            .collect();
        if runs.is_empty() {
            runs.push(Run::new(&[]));
        }
        Pattern {
            runs: runs.into_boxed_slice(),
            open_start,
            open_end,
        }
    }

    /// Compiles a glob as Python 3.8's `fnmatch.fnmatch` reads it: `*` any run, `?` any character,
    /// `[...]` a class (`!` first negates, `]` first is literal, `a-z` ranges, backslash literal), an
    /// unclosed `[` a literal; everything else literal and case-sensitive.
    pub(super) fn from_fnmatch(glob: &str) -> Result<Pattern, BadRange> {
        let chars: Vec<char> = glob.chars().collect();
        let mut atoms = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => atoms.push(Atom::AnyRun),
                '?' => atoms.push(Atom::AnyChar),
                '[' => {
                    let mut end = i;
                    if chars.get(end) == Some(&'!') {
                        end += 1;
                    }
                    if chars.get(end) == Some(&']') {
                        end += 1;
                    }
                    while end < chars.len() && chars[end] != ']' {
                        end += 1;
                    }
                    if end >= chars.len() {
                        atoms.push(Atom::Literal('['));
                    } else {
                        atoms.push(fnmatch_class(&chars[i..end])?);
                        i = end + 1;
                    }
                }
                c => atoms.push(Atom::Literal(c)),
            }
        }
        Ok(Pattern::new(atoms))
    }

    /// Compiles a SQL `LIKE` pattern: `%` any run, `_` any character, `escape` (when given) makes the
    /// next character literal; everything else literal and case-sensitive.
    pub(super) fn from_sql_like(
        pattern: &str,
        escape: Option<char>,
    ) -> Result<Pattern, DanglingEscape> {
        let mut atoms = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let atom = match c {
                c if Some(c) == escape => Atom::Literal(chars.next().ok_or(DanglingEscape)?),
                '%' => Atom::AnyRun,
                '_' => Atom::AnyChar,
                c => Atom::Literal(c),
            };
            atoms.push(atom);
        }
        Ok(Pattern::new(atoms))
    }

    /// Whether the pattern covers all of `text`.
    pub(super) fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.runs.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        if !self.open_start && !self.open_end && rest.is_empty() {
            return first.matches_exactly(text);
        }
        let mut middle: &[Run] = &self.runs;
        let mut from = 0;
        if !self.open_start {
            let Some(len) = first.match_at(text) else {
                return false;
            };
            from = len;
            middle = rest;
        }
        let mut end = text.len();
        if !self.open_end {
            let Some((last, before)) = middle.split_last() else {
                return from == end;
            };
            let Some(start) = last.suffix_start(&text[from..]) else {
                return false;
            };
            end = from + start;
            middle = before;
        }
        for run in middle {
            match run.find(&text[from..end]) {
                Some(after) => from += after,
                None => return false,
            }
        }
        true
    }
}

impl Run {
    fn new(atoms: &[Atom]) -> Run {
        let literal = atoms
            .iter()
            .map(|atom| match atom {
                Atom::Literal(c) => Some(*c),
                _ => None,
            })
            .collect::<Option<String>>()
            .map(String::into_boxed_str);
        Run {
            atoms: atoms.into(),
            literal,
        }
    }

    /// The byte length of the run matched at the start of `text`, if it matches there.
    fn match_at(&self, text: &str) -> Option<usize> {
        let mut chars = text.char_indices();
        for atom in self.atoms.iter() {
            let (_, c) = chars.next()?;
            if !atom.matches(c) {
                return None;
            }
        }
        Some(chars.next().map_or(text.len(), |(at, _)| at))
    }

    fn matches_exactly(&self, text: &str) -> bool {
        self.match_at(text) == Some(text.len())
    }

    /// Where the run starts when it matches the end of `text`.
    fn suffix_start(&self, text: &str) -> Option<usize> {
        let start = match self.atoms.len() {
            0 => text.len(),
            n => text.char_indices().rev().nth(n - 1)?.0,
        };
        self.matches_exactly(&text[start..]).then_some(start)
    }

    /// The byte offset just past the leftmost occurrence of the run in `text`.
    fn find(&self, text: &str) -> Option<usize> {
        if let Some(literal) = &self.literal {
            return text.find(&**literal).map(|at| at + literal.len());
        }
        text.char_indices()
            .map(|(at, _)| at)
            .find_map(|at| self.match_at(&text[at..]).map(|len| at + len))
    }
}

/// The class between `[` and `]` (exclusive), as `fnmatch.translate` rewrites it and `re` then
/// parses it. Without a `--` in the class every `-` may form a range; with one, translate splits the
/// class at the hyphens it finds scanning from the second character and three characters past each,
/// and escapes every other hyphen (an escaped hyphen is a literal, never a range operator).
fn fnmatch_class(stuff: &[char]) -> Result<Atom, BadRange> {
    let negated = stuff.first() == Some(&'!');
    let mut range_hyphen: Vec<bool> = stuff.iter().map(|&c| c == '-').collect();
    if stuff.windows(2).any(|w| w == ['-', '-']) {
        range_hyphen.iter_mut().for_each(|h| *h = false);
        let mut from = if negated { 2 } else { 1 };
        while let Some(found) = stuff
            .get(from..)
            .and_then(|rest| rest.iter().position(|&c| c == '-'))
        {
            let at = from + found;
            range_hyphen[at] = true;
            from = at + 3;
        }
    }
    let mut ranges = Vec::new();
    let mut k = usize::from(negated);
    while k < stuff.len() {
        let lo = stuff[k];
        k += 1;
        if range_hyphen.get(k) == Some(&true) {
            k += 1;
            let Some(&hi) = stuff.get(k) else {
                // `a-` before the closing bracket: both literal.
                ranges.push((lo, lo));
                ranges.push(('-', '-'));
                break;
            };
            k += 1;
            if hi < lo {
                return Err(BadRange);
            }
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok(Atom::Class {
        negated,
        ranges: ranges.into_boxed_slice(),
    })
}
