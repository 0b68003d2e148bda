//! Site expressions: which sites a replication rule may place copies on.
//!
//! A rule reads "N copies on sites matching E". E is written in this small language over
//! a site's name and the attributes its federation entry declares (`country = "fr"`,
//! `tier = "hpc"`), so that a rule keeps meaning the same thing as sites join and leave:
//!
//! ```text
//! expr    = and { "|" and } ;
//! and     = unary { "&" unary } ;
//! unary   = "!" unary | primary ;
//! primary = "*" | "(" expr ")" | attr ( "=" value | "!=" value | "in" "(" value { "," value } ")" ) ;
//! attr    = word ;
//! value   = word | quoted ;
//! word    = ( letter | digit | "-" | "_" | "." ) { letter | digit | "-" | "_" | "." } ;   (ASCII)
//! quoted  = '"' { any character except '"' and '\' | '\"' | '\\' } '"' ;   (only \" and \\ escape)
//! ```
//!
//! - `&` binds tighter than `|`, and `!` applies to the operand right after it: `!tier = cloud`
//!   is `!(tier = cloud)`. Negation is written `!` only; `not` is an ordinary word.
//! - `*` matches every site.
//! - The attribute `site` is the site's own name, as in `site in (paris, julich)`; an
//!   attribute a site declares under that name is never consulted.
//! - Values compare exactly, byte for byte. A site without attribute `a` matches neither
//!   `a = v` nor `a in (...)`; `a != v` is the negation of `a = v`, so it does match:
//!   `tier != cloud` includes the sites that do not declare a tier.
//! - `in` is a keyword only right after an attribute name (an attribute or value may be
//!   called `in`). ASCII whitespace separates tokens and is needed only between two words.
//!
//! Input is bounded to [`MAX_LEN`] bytes (what a rule event may carry) and [`MAX_DEPTH`]
//! levels of `(` and `!`, so neither the recursive parser nor the recursive evaluation of
//! what it builds can run out of stack, whatever a peer sends.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The longest expression accepted, in bytes: as long as a rule event may carry.
pub const MAX_LEN: usize = 1024;

/// How deeply `(` and `!` may nest, counted together.
pub const MAX_DEPTH: usize = 32;

/// The reserved attribute that stands for the site's name.
const SITE: &str = "site";

/// A parsed expression over site names and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitesExpr {
    root: Node,
}

/// Why a text is not a sites expression, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sites expression, at byte {at}: {message}")]
pub struct ExprError {
    /// byte offset in the text where the problem was found
    pub at: usize,
    /// what was found, and what was expected instead
    pub message: String,
}

impl ExprError {
    fn new(at: usize, message: impl Into<String>) -> Self {
        Self { at, message: message.into() }
    }
}

impl SitesExpr {
    /// Parses `text` (see the module documentation for the grammar).
    pub fn parse(text: &str) -> Result<SitesExpr, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError::new(MAX_LEN, format!("{} bytes long, more than the {MAX_LEN} allowed", text.len())));
        }
        let mut parser = Parser::new(text)?;
        if parser.token.kind == Kind::End {
            return Err(ExprError::new(parser.token.at, "empty expression: expected a test, or '*' for every site"));
        }
        let root = parser.expr()?;
        match &parser.token.kind {
            Kind::End => Ok(SitesExpr { root }),
            Kind::Close => Err(ExprError::new(parser.token.at, "unmatched ')'")),
            other => Err(ExprError::new(
                parser.token.at,
                format!("unexpected {} after the end of the expression", other.describe()),
            )),
        }
    }

    /// Whether a site named `name` with `attributes` matches.
    pub fn matches(&self, name: &str, attributes: &BTreeMap<String, String>) -> bool {
        self.root.matches(name, attributes)
    }

    /// The source text, normalised (tokens separated by single spaces), for display.
    ///
    /// Parentheses the precedence makes redundant are left out and values are quoted only
    /// when they are not words, so equal expressions read the same; parsing the text gives
    /// this expression back.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SitesExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl FromStr for SitesExpr {
    type Err = ExprError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The expression tree. `&` and `|` hold all their operands in one node, so a long chain
/// of them adds no depth: only `(` and `!` do, and those are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// `*`
    Every,
    /// `attr = v`, `attr != v` or `attr in (v, ...)`
    Test { attr: String, op: Op },
    /// `! operand`
    Not(Box<Node>),
    /// two or more operands joined by `&`, none of them itself an `All`
    All(Vec<Node>),
    /// two or more operands joined by `|`, none of them itself an `Any`
    Any(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    // Kept apart from `Not(Eq)` so that `text()` shows what was written.
    Ne(String),
    In(Vec<String>),
}

impl Node {
    fn matches(&self, name: &str, attributes: &BTreeMap<String, String>) -> bool {
        match self {
            Node::Every => true,
            Node::Test { attr, op } => {
                let actual = if attr == SITE { Some(name) } else { attributes.get(attr).map(String::as_str) };
                match op {
                    Op::Eq(value) => actual == Some(value.as_str()),
                    Op::Ne(value) => actual != Some(value.as_str()),
                    Op::In(values) => actual.is_some_and(|actual| values.iter().any(|value| value == actual)),
                }
            }
            Node::Not(operand) => !operand.matches(name, attributes),
            Node::All(operands) => operands.iter().all(|operand| operand.matches(name, attributes)),
            Node::Any(operands) => operands.iter().any(|operand| operand.matches(name, attributes)),
        }
    }

    /// Writes the node, in parentheses if `grouped`.
    fn fmt_grouped(&self, f: &mut fmt::Formatter<'_>, grouped: bool) -> fmt::Result {
        if grouped { write!(f, "( {self} )") } else { write!(f, "{self}") }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Every => f.write_str("*"),
            Node::Test { attr, op: Op::Eq(value) } => write!(f, "{attr} = {}", Value(value)),
            Node::Test { attr, op: Op::Ne(value) } => write!(f, "{attr} != {}", Value(value)),
            Node::Test { attr, op: Op::In(values) } => {
                write!(f, "{attr} in (")?;
                for (i, value) in values.iter().enumerate() {
                    let separator = if i == 0 { "" } else { " ," };
                    write!(f, "{separator} {}", Value(value))?;
                }
                f.write_str(" )")
            }
            Node::Not(operand) => {
                f.write_str("! ")?;
                operand.fmt_grouped(f, matches!(**operand, Node::All(_) | Node::Any(_)))
            }
            Node::All(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" & ")?;
                    }
                    operand.fmt_grouped(f, matches!(operand, Node::Any(_)))?;
                }
                Ok(())
            }
            Node::Any(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    // `&` binds tighter and an `Any` holds no `Any`: nothing needs grouping.
                    operand.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

/// A value as it is written back: bare if it is a word, quoted otherwise.
struct Value<'a>(&'a str);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() && self.0.chars().all(is_word_char) {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Star,
    End,
}

impl Kind {
    /// The token as an error message names it.
    fn describe(&self) -> String {
        let symbol = match self {
            Kind::Word(word) => return format!("'{word}'"),
            Kind::Quoted(_) => return "a quoted value".to_owned(),
            Kind::End => return "the end of the expression".to_owned(),
            Kind::Open => "(",
            Kind::Close => ")",
            Kind::Comma => ",",
            Kind::And => "&",
            Kind::Or => "|",
            Kind::Not => "!",
            Kind::Eq => "=",
            Kind::Ne => "!=",
            Kind::Star => "*",
        };
        format!("'{symbol}'")
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// byte offset of its first character
    at: usize,
}

/// Cuts the text into tokens one at a time, as the parser asks, so that the first error
/// reported is the leftmost one whether it is in a token or in the grammar.
struct Lexer<'a> {
    text: &'a str,
    /// what is left to read: a suffix of `text`, so offsets need no bookkeeping
    rest: &'a str,
}

impl Lexer<'_> {
    fn next_token(&mut self) -> Result<Token, ExprError> {
        self.rest = self.rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let at = self.text.len() - self.rest.len();
        let mut chars = self.rest.chars();
        let Some(first) = chars.next() else {
            return Ok(Token { kind: Kind::End, at });
        };
        let (kind, len) = match first {
            '(' => (Kind::Open, 1),
            ')' => (Kind::Close, 1),
            ',' => (Kind::Comma, 1),
            '&' => (Kind::And, 1),
            '|' => (Kind::Or, 1),
            '*' => (Kind::Star, 1),
            '=' => (Kind::Eq, 1),
            '!' if chars.next() == Some('=') => (Kind::Ne, 2),
            '!' => (Kind::Not, 1),
            '"' => self.quoted(at)?,
            c if is_word_char(c) => {
                let len = self.rest.find(|c| !is_word_char(c)).unwrap_or(self.rest.len());
                (Kind::Word(self.rest[..len].to_owned()), len)
            }
            c => return Err(ExprError::new(at, format!("unexpected character '{}'", c.escape_debug()))),
        };
        self.rest = &self.rest[len..];
        Ok(Token { kind, at })
    }

    /// Reads the quoted value `self.rest` starts with (at byte `at` of the text): the value
    /// and how many bytes it took.
    fn quoted(&self, at: usize) -> Result<(Kind, usize), ExprError> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((Kind::Quoted(value), i + 1)),
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    Some(_) => {
                        return Err(ExprError::new(at + i, "in a quoted value, '\\' may only escape '\"' or '\\'"));
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err(ExprError::new(at, "expected a closing '\"' for this quoted value"))
    }
}

/// Recursive descent, one function per rule of the grammar, over one token of lookahead.
struct Parser<'a> {
    lexer: Lexer<'a>,
    /// the next token, not yet consumed
    token: Token,
    /// how many `(` and `!` enclose the current position
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, ExprError> {
        let mut lexer = Lexer { text, rest: text };
        let token = lexer.next_token()?;
        Ok(Parser { lexer, token, depth: 0 })
    }

    /// Consumes the current token and reads the next.
    fn bump(&mut self) -> Result<(), ExprError> {
        self.token = self.lexer.next_token()?;
        Ok(())
    }

    /// The error for finding the current token where `expected` was wanted.
    fn unexpected(&self, expected: &str) -> ExprError {
        ExprError::new(self.token.at, format!("{expected}, found {}", self.token.kind.describe()))
    }

    /// `expr = and { "|" and }`
    fn expr(&mut self) -> Result<Node, ExprError> {
        let mut operands = Vec::new();
        loop {
            // `a | (b | c)` is `a | b | c`: one node, whichever way it was grouped.
            match self.and()? {
                Node::Any(inner) => operands.extend(inner),
                operand => operands.push(operand),
            }
            if self.token.kind != Kind::Or {
                break;
            }
            self.bump()?;
        }
        Ok(match <[Node; 1]>::try_from(operands) {
            Ok([operand]) => operand,
            Err(operands) => Node::Any(operands),
        })
    }

    /// `and = unary { "&" unary }`
    fn and(&mut self) -> Result<Node, ExprError> {
        let mut operands = Vec::new();
        loop {
            match self.unary()? {
                Node::All(inner) => operands.extend(inner),
                operand => operands.push(operand),
            }
            if self.token.kind != Kind::And {
                break;
            }
            self.bump()?;
        }
        Ok(match <[Node; 1]>::try_from(operands) {
            Ok([operand]) => operand,
            Err(operands) => Node::All(operands),
        })
    }

    /// `unary = "!" unary | primary`, and `primary` with it.
    fn unary(&mut self) -> Result<Node, ExprError> {
        match &mut self.token.kind {
            Kind::Star => {
                self.bump()?;
                Ok(Node::Every)
            }
            Kind::Not => self.nested(|parser| {
                parser.bump()?;
                Ok(Node::Not(Box::new(parser.unary()?)))
            }),
            Kind::Open => {
                let open = self.token.at;
                self.nested(|parser| {
                    parser.bump()?;
                    let inner = parser.expr()?;
                    if parser.token.kind != Kind::Close {
                        return Err(parser.unexpected(&format!("expected ')' to close '(' at byte {open}")));
                    }
                    parser.bump()?;
                    Ok(inner)
                })
            }
            Kind::Word(attr) => {
                let attr = std::mem::take(attr);
                self.bump()?;
                self.test(attr)
            }
            Kind::Quoted(_) => Err(self.unexpected("expected an attribute name (only values may be quoted)")),
            _ => Err(self.unexpected("expected an attribute name, '(', '!' or '*'")),
        }
    }

    /// Runs `parse` one level deeper, the current token being the `(` or `!` that opens it.
    fn nested(&mut self, parse: impl FnOnce(&mut Self) -> Result<Node, ExprError>) -> Result<Node, ExprError> {
        if self.depth == MAX_DEPTH {
            return Err(ExprError::new(
                self.token.at,
                format!("nested too deeply: at most {MAX_DEPTH} levels of '(' and '!'"),
            ));
        }
        self.depth += 1;
        let node = parse(self)?;
        self.depth -= 1;
        Ok(node)
    }

    /// The rest of a test, once its attribute name is read.
    fn test(&mut self, attr: String) -> Result<Node, ExprError> {
        let op = match &self.token.kind {
            Kind::Eq => {
                self.bump()?;
                Op::Eq(self.value("'='")?)
            }
            Kind::Ne => {
                self.bump()?;
                Op::Ne(self.value("'!='")?)
            }
            Kind::Word(word) if word == "in" => {
                self.bump()?;
                Op::In(self.list()?)
            }
            _ => {
                let mut error = self.unexpected(&format!("expected '=', '!=' or 'in' after attribute '{attr}'"));
                if attr == "not" {
                    // Most likely `not tier = cloud`, from a language that spells it so.
                    error.message.push_str(" (negation is written '!')");
                }
                return Err(error);
            }
        };
        Ok(Node::Test { attr, op })
    }

    /// A value, word or quoted, that must come after `after`.
    fn value(&mut self, after: &str) -> Result<String, ExprError> {
        let value = match &mut self.token.kind {
            Kind::Word(value) | Kind::Quoted(value) => std::mem::take(value),
            _ => return Err(self.unexpected(&format!("expected a value after {after}"))),
        };
        self.bump()?;
        Ok(value)
    }

    /// `"(" value { "," value } ")"`, after `in`.
    fn list(&mut self) -> Result<Vec<String>, ExprError> {
        if self.token.kind != Kind::Open {
            return Err(self.unexpected("expected '(' after 'in'"));
        }
        let open = self.token.at;
        self.bump()?;
        if self.token.kind == Kind::Close {
            return Err(ExprError::new(self.token.at, "expected at least one value in 'in ( )'"));
        }
        let mut values = vec![self.value("'('")?];
        loop {
            match self.token.kind {
                Kind::Comma => {
                    self.bump()?;
                    values.push(self.value("','")?);
                }
                Kind::Close => {
                    self.bump()?;
                    return Ok(values);
                }
                _ => return Err(self.unexpected(&format!("expected ',' or ')' to close '(' at byte {open}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn sites() -> Vec<(&'static str, BTreeMap<String, String>)> {
        vec![
            ("paris", attributes(&[("country", "fr"), ("tier", "hpc")])),
            ("julich", attributes(&[("country", "de"), ("tier", "hpc")])),
            ("ovh", attributes(&[("country", "fr"), ("tier", "cloud")])),
            ("bare", attributes(&[])),
        ]
    }

    fn parse(text: &str) -> SitesExpr {
        SitesExpr::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// The names of the sites `text` matches, in table order.
    fn matching(text: &str) -> Vec<&'static str> {
        let expr = parse(text);
        sites().into_iter().filter(|(name, attributes)| expr.matches(name, attributes)).map(|(name, _)| name).collect()
    }

    fn error(text: &str) -> ExprError {
        match SitesExpr::parse(text) {
            Ok(expr) => panic!("{text:?} parsed, as {expr}"),
            Err(e) => e,
        }
    }

    #[test]
    fn examples() {
        assert_eq!(matching("country=fr & tier=hpc"), ["paris"]);
        assert_eq!(matching("site in (paris, julich)"), ["paris", "julich"]);
        assert_eq!(matching("country = fr | site = julich"), ["paris", "julich", "ovh"]);
        assert_eq!(matching("!(tier=cloud)"), ["paris", "julich", "bare"]);
        assert_eq!(matching("*"), ["paris", "julich", "ovh", "bare"]);
        assert_eq!(matching("tier != cloud"), ["paris", "julich", "bare"]);
        assert_eq!(matching("(site = ovh)"), ["ovh"]);
    }

    #[test]
    fn missing_attributes() {
        // Nothing equals an attribute the site lacks, so `!=` holds there.
        assert_eq!(matching("tier = cloud"), ["ovh"]);
        assert_eq!(matching("gpu = a100"), Vec::<&str>::new());
        assert_eq!(matching("gpu in (a100, h100)"), Vec::<&str>::new());
        assert_eq!(matching("gpu != a100"), ["paris", "julich", "ovh", "bare"]);
        assert_eq!(matching("site = bare"), ["bare"]);
    }

    #[test]
    fn site_is_the_name_not_an_attribute() {
        let declared = attributes(&[("site", "elsewhere")]);
        assert!(parse("site = paris").matches("paris", &declared));
        assert!(!parse("site = elsewhere").matches("paris", &declared));
    }

    #[test]
    fn negation_and_quoting() {
        assert_eq!(parse("!tier = cloud"), parse("!(tier=cloud)"));
        assert_eq!(matching("!!(tier=cloud)"), ["ovh"]);
        assert_eq!(matching("!*"), Vec::<&str>::new());
        assert_eq!(parse(r#"country = "fr""#), parse("country = fr"));
        let region = attributes(&[("region", "Île \"de\" France\\")]);
        assert!(parse(r#"region = "Île \"de\" France\\""#).matches("x", &region));
        assert!(parse(r#"region in (idf, "Île \"de\" France\\")"#).matches("x", &region));
        // `in` and `not` are keywords only where an operator is expected.
        assert!(parse("in in (in)").matches("x", &attributes(&[("in", "in")])));
        assert!(parse("not = x").matches("x", &attributes(&[("not", "x")])));
        assert!(parse(r#"a = """#).matches("x", &attributes(&[("a", "")])));
    }

    #[test]
    fn precedence() {
        // `&` before `|`: de | (fr & cloud), not (de | fr) & cloud.
        assert_eq!(matching("country = de | country = fr & tier = cloud"), ["julich", "ovh"]);
        assert_eq!(matching("(country = de | country = fr) & tier = cloud"), ["ovh"]);
        assert_eq!(matching("tier = cloud & country = fr | country = de"), ["julich", "ovh"]);
        // `!` before `&`: (!fr) & hpc, not !(fr & hpc).
        assert_eq!(matching("!country = fr & tier = hpc"), ["julich"]);
        assert_eq!(matching("!(country = fr & tier = hpc)"), ["julich", "ovh", "bare"]);
        assert_eq!(parse("a=1 | b=2 & c=3"), parse("a=1 | (b=2 & c=3)"));
        assert_ne!(parse("a=1 | b=2 & c=3"), parse("(a=1 | b=2) & c=3"));
        // Grouping the same operator changes nothing.
        assert_eq!(parse("a=1 & (b=2 & c=3)"), parse("(a=1 & b=2) & c=3"));
        assert_eq!(parse("a=1 | (b=2 | c=3)"), parse("a=1 | b=2 | c=3"));
    }

    #[test]
    fn errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty expression: expected a test, or '*' for every site"),
            ("  \t", 3, "empty expression: expected a test, or '*' for every site"),
            ("tier = cloud #", 13, "unexpected character '#'"),
            ("tier = clöud", 9, "unexpected character 'ö'"),
            ("a = \"fr", 4, "expected a closing '\"' for this quoted value"),
            ("a = \"fr\\", 4, "expected a closing '\"' for this quoted value"),
            ("a = \"f\\nr\"", 6, "in a quoted value, '\\' may only escape '\"' or '\\'"),
            ("& a = b", 0, "expected an attribute name, '(', '!' or '*', found '&'"),
            ("a = b |", 7, "expected an attribute name, '(', '!' or '*', found the end of the expression"),
            ("a = b && c = d", 7, "expected an attribute name, '(', '!' or '*', found '&'"),
            ("()", 1, "expected an attribute name, '(', '!' or '*', found ')'"),
            ("\"a\" = b", 0, "expected an attribute name (only values may be quoted), found a quoted value"),
            ("tier", 4, "expected '=', '!=' or 'in' after attribute 'tier', found the end of the expression"),
            ("tier == hpc", 6, "expected a value after '=', found '='"),
            ("tier != ", 8, "expected a value after '!=', found the end of the expression"),
            ("tier = *", 7, "expected a value after '=', found '*'"),
            (
                "not tier = cloud",
                4,
                "expected '=', '!=' or 'in' after attribute 'not', found 'tier' (negation is written '!')",
            ),
            ("site in paris", 8, "expected '(' after 'in', found 'paris'"),
            ("site in ()", 9, "expected at least one value in 'in ( )'"),
            ("site in (paris,)", 15, "expected a value after ',', found ')'"),
            ("site in (,paris)", 9, "expected a value after '(', found ','"),
            ("site in (paris julich)", 15, "expected ',' or ')' to close '(' at byte 8, found 'julich'"),
            ("site in (paris", 14, "expected ',' or ')' to close '(' at byte 8, found the end of the expression"),
            ("a = b & (c = d | e = f", 22, "expected ')' to close '(' at byte 8, found the end of the expression"),
            ("(a = b))", 7, "unmatched ')'"),
            ("a = b xyz", 6, "unexpected 'xyz' after the end of the expression"),
            ("a = b (c = d)", 6, "unexpected '(' after the end of the expression"),
            ("* *", 2, "unexpected '*' after the end of the expression"),
        ];
        for &(text, at, message) in cases {
            assert_eq!(error(text), ExprError::new(at, message), "{text:?}");
        }
        assert_eq!(
            error("a = b (c = d)").to_string(),
            "sites expression, at byte 6: unexpected '(' after the end of the expression"
        );
    }

    #[test]
    fn length_bound() {
        // `site = xxx…` of exactly MAX_LEN bytes is accepted, one more byte is not.
        let longest = format!("site = {}", "x".repeat(MAX_LEN - 7));
        assert_eq!(longest.len(), MAX_LEN);
        assert!(parse(&longest).matches(&longest[7..], &BTreeMap::new()));
        assert_eq!(
            error(&format!("{longest}x")),
            ExprError::new(MAX_LEN, "1025 bytes long, more than the 1024 allowed")
        );
        // A long flat chain is no deeper than two operands.
        let chain = vec!["a = b"; MAX_LEN / 8].join(" & ");
        assert!(chain.len() <= MAX_LEN);
        assert!(parse(&chain).matches("x", &attributes(&[("a", "b")])));
    }

    #[test]
    fn depth_bound() {
        let deepest = format!("{}a = b{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse(&deepest), parse("a = b"));
        let too_deep = format!("({deepest})");
        let message = "nested too deeply: at most 32 levels of '(' and '!'";
        assert_eq!(error(&too_deep), ExprError::new(MAX_DEPTH, message));
        assert_eq!(error(&"!".repeat(MAX_DEPTH + 1)), ExprError::new(MAX_DEPTH, message));
        assert_eq!(matching(&format!("{}*", "!".repeat(MAX_DEPTH))), ["paris", "julich", "ovh", "bare"]);
        // `(` and `!` count together.
        assert_eq!(error(&format!("{}a = b", "!(".repeat(MAX_DEPTH / 2 + 1))), ExprError::new(MAX_DEPTH, message));
        // As deep as the length allows: refused, not a stack overflow.
        assert_eq!(error(&"(".repeat(MAX_LEN)), ExprError::new(MAX_DEPTH, message));
    }

    #[test]
    fn text_round_trip() {
        let cases = [
            ("country=fr & tier=hpc", "country = fr & tier = hpc"),
            ("site in (paris,julich)", "site in ( paris , julich )"),
            ("country = fr | site = julich", "country = fr | site = julich"),
            ("!(tier=cloud)", "! tier = cloud"),
            ("*", "*"),
            ("tier!=cloud", "tier != cloud"),
            ("((a=1 | b=2)) & !(c=3 & d=4)", "( a = 1 | b = 2 ) & ! ( c = 3 & d = 4 )"),
            ("a=1 | (b=2 & c=3) | (d=4|e=5)", "a = 1 | b = 2 & c = 3 | d = 4 | e = 5"),
            ("!!(x=y | *)", "! ! ( x = y | * )"),
            (r#"a = "fr" & b = "" & c = "a b" & d = "\"\\é""#, r#"a = fr & b = "" & c = "a b" & d = "\"\\é""#),
            ("in in (in)", "in in ( in )"),
        ];
        for (text, normalised) in cases {
            let expr = parse(text);
            assert_eq!(expr.text(), normalised, "{text:?}");
            assert_eq!(expr.to_string(), normalised);
            assert_eq!(parse(normalised), expr, "{text:?}");
            assert_eq!(normalised.parse::<SitesExpr>(), Ok(expr));
        }
    }

    /// A random expression tree in the form the parser builds (no `All` directly in an
    /// `All`, no `Any` in an `Any`, at least two operands each), `depth` levels deep at most.
    fn random_node(rng: &mut StdRng, depth: usize) -> Node {
        const WORDS: &[&str] = &["site", "paris", "tier", "in", "not", "x-1.y_z", "0"];
        const VALUES: &[&str] = &["fr", "in", "", "a b", "\"", "\\", "é", "*", "(", "x,y"];
        let value = |rng: &mut StdRng| {
            let pool = if rng.gen_bool(0.5) { WORDS } else { VALUES };
            pool[rng.gen_range(0..pool.len())].to_owned()
        };
        let attr = WORDS[rng.gen_range(0..WORDS.len())].to_owned();
        let leaf_only = depth == 0;
        match rng.gen_range(0..if leaf_only { 4 } else { 7 }) {
            0 => Node::Every,
            1 => Node::Test { attr, op: Op::Eq(value(rng)) },
            2 => Node::Test { attr, op: Op::Ne(value(rng)) },
            3 => Node::Test { attr, op: Op::In((0..rng.gen_range(1..4)).map(|_| value(rng)).collect()) },
            4 => Node::Not(Box::new(random_node(rng, depth - 1))),
            kind => {
                let all = kind == 5;
                let operands = (0..rng.gen_range(2..4))
                    .map(|_| {
                        loop {
                            let operand = random_node(rng, depth - 1);
                            if !matches!((all, &operand), (true, Node::All(_)) | (false, Node::Any(_))) {
                                break operand;
                            }
                        }
                    })
                    .collect();
                if all { Node::All(operands) } else { Node::Any(operands) }
            }
        }
    }

    #[test]
    fn random_trees_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let expr = SitesExpr { root: random_node(&mut rng, 3) };
            let text = expr.text();
            // A level of the tree is at most two of nesting (`! ( ... )`), well within
            // MAX_DEPTH; the length is not bounded so, but a few trees go over at most.
            if text.len() > MAX_LEN {
                assert_eq!(error(&text).at, MAX_LEN);
                continue;
            }
            assert_eq!(SitesExpr::parse(&text).as_ref(), Ok(&expr), "{text:?}");
        }
    }

    #[test]
    fn random_token_soup_never_panics() {
        const PIECES: &[&str] =
            &["a", "site", "in", "=", "!=", "!", "(", ")", ",", "&", "|", "*", "\"q\\\"\"", "\"", " ", "é", "#"];
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let text: String = (0..rng.gen_range(0..12)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
            match SitesExpr::parse(&text) {
                Ok(expr) => assert_eq!(parse(&expr.text()), expr, "{text:?}"),
                Err(e) => assert!(e.at <= text.len() && text.is_char_boundary(e.at), "{text:?}: {e}"),
            }
        }
    }
}
