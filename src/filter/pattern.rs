//! Wildcard patterns matched against a whole string: the one matcher behind both dialects' `LIKE`.
//! Owns the compilation of Python's `fnmatch` globs (Cobra: `*`, `?`, `[...]` classes, read exactly as
//! Python 3.8's `fnmatch.translate` and `re` read them) and of SQL `LIKE` patterns (native: `%`, `_`,
//! an optional escape character), and the matching itself. Knows nothing of JSON.

/// A compiled pattern: a sequence of atoms that must cover the whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    atoms: Box<[Atom]>,
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
            Atom::AnyRun => true,
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

impl Pattern {
    fn new(mut atoms: Vec<Atom>) -> Pattern {
        // `**` matches what `*` matches; one run keeps the backtracking linear per star.
        atoms.dedup_by(|next, prev| *next == Atom::AnyRun && *prev == Atom::AnyRun);
        Pattern {
            atoms: atoms.into_boxed_slice(),
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

    /// Whether the pattern covers all of `text`. Backtracks only to the last `AnyRun`, which is
    /// exact for single-character atoms and bounded by pattern length × text length.
    pub(super) fn matches(&self, text: &str) -> bool {
        let atoms = &self.atoms;
        let (mut p, mut t) = (0, 0);
        // (atom after the last AnyRun, text offset that run would end at next)
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if let Some(atom) = atoms.get(p) {
                if *atom == Atom::AnyRun {
                    p += 1;
                    resume = Some((p, t));
                    continue;
                }
                if let Some(c) = text[t..].chars().next() {
                    if atom.matches(c) {
                        p += 1;
                        t += c.len_utf8();
                        continue;
                    }
                }
            } else if t == text.len() {
                return true;
            }
            let Some((after_run, run_end)) = resume else {
                return false;
            };
            let Some(c) = text[run_end..].chars().next() else {
                return false;
            };
            let run_end = run_end + c.len_utf8();
            resume = Some((after_run, run_end));
            p = after_run;
            t = run_end;
        }
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
