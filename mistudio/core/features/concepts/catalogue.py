"""The concepts a token can carry, each with the words a label uses and the family it belongs to.

The order is fixed (annotations are cached as bit columns in this order); adding or renaming a
concept changes :data:`CATALOGUE_VERSION`, so older caches are rebuilt rather than misread.
"""

from __future__ import annotations

from typing import NamedTuple

CATALOGUE_VERSION = 1


class Concept(NamedTuple):
    key: str
    """Stable identifier (``pos:NOUN``, ``py:string``, ``in:dquote``)."""
    words: str
    """A plural noun phrase a label uses ("proper nouns", "text inside double quotes")."""
    family: str
    """The family a label led by this concept belongs to (browser filter)."""
    source: str
    """spacy (needs the English pipeline), text, code or markup."""


def _c(source: str, family: str, *items: tuple[str, str]) -> list[Concept]:
    return [Concept(k, w, family, source) for k, w in items]


LINGUISTIC = (
    _c("spacy", "names", ("pos:PROPN", "proper nouns"), ("ent:PERSON", "names of people"),
       ("ent:ORG", "names of organisations"), ("ent:GPE", "names of places"),
       ("ent:NORP", "nationalities and groups"), ("ent:PRODUCT", "product names"),
       ("ent:LANGUAGE", "names of languages"), ("ent:WORK_OF_ART", "titles of works"),
       ("ent:start", "first words of named entities"))
    + _c("spacy", "numbers", ("pos:NUM", "numerals"), ("ent:CARDINAL", "cardinal numbers"),
         ("ent:ORDINAL", "ordinals (first, 2nd)"), ("ent:DATE", "dates"),
         ("ent:QUANTITY", "quantities"), ("ent:PERCENT", "percentages"),
         ("ent:MONEY", "amounts of money"), ("ent:TIME", "times of day"))
    + _c("spacy", "negation", ("dep:neg", "negation words"),
         ("morph:Polarity=Neg", "negative words (not, no, never)"))
    + _c("spacy", "nouns", ("pos:NOUN", "nouns"), ("tag:NNS", "plural nouns"),
         ("dep:compound", "compound-noun modifiers"))
    + _c("spacy", "verbs", ("pos:VERB", "verbs"), ("pos:AUX", "auxiliary verbs"),
         ("tag:VBD", "past-tense verbs"), ("tag:VBN", "past participles"),
         ("tag:VBG", "-ing verbs"), ("tag:VBZ", "third-person present verbs"),
         ("tag:VB", "base-form verbs"), ("tag:MD", "modal verbs (can, must, should)"),
         ("morph:VerbForm=Inf", "infinitives"), ("dep:ROOT", "main verbs of sentences"),
         ("dep:auxpass", "passive auxiliaries"), ("dep:prt", "verb particles (set up)"))
    + _c("spacy", "adjectives and adverbs", ("pos:ADJ", "adjectives"), ("pos:ADV", "adverbs"),
         ("tag:JJR", "comparatives"), ("tag:JJS", "superlatives"),
         ("dep:amod", "adjectives before nouns"), ("dep:acomp", "adjectives after verbs"))
    + _c("spacy", "function words", ("pos:DET", "determiners"),
         ("morph:PronType=Art", "articles (a, an, the)"), ("pos:ADP", "prepositions"),
         ("pos:PRON", "pronouns"), ("pos:CCONJ", "and / or / but"),
         ("pos:SCONJ", "subordinating conjunctions (if, because)"), ("pos:PART", "particles"),
         ("tag:WDT", "wh-determiners (which, what)"), ("tag:WRB", "wh-adverbs (when, where, how)"),
         ("tag:WP", "wh-pronouns (who, what)"), ("tag:PRP$", "possessive pronouns"),
         ("morph:Person=1", "first-person pronouns"), ("morph:Person=2", "second-person you"),
         ("tag:EX", "existential there"), ("tag:TO", "the word to"), ("lex:stop", "stop words"))
    + _c("spacy", "syntax", ("dep:nsubj", "subjects"), ("dep:nsubjpass", "passive subjects"),
         ("dep:dobj", "direct objects"), ("dep:pobj", "objects of prepositions"),
         ("dep:attr", "attributes after is / are"), ("dep:appos", "appositions"),
         ("dep:poss", "possessors"), ("dep:conj", "conjuncts (after and / or)"),
         ("dep:mark", "clause markers (that, if, because)"), ("dep:advcl", "adverbial clauses"),
         ("dep:relcl", "relative clauses"), ("dep:ccomp", "clausal complements"),
         ("dep:xcomp", "verb complements"), ("dep:agent", "agents (by ...)"),
         ("dep:nummod", "number modifiers"), ("dep:npadvmod", "noun-phrase adverbs"),
         ("dep:advmod", "adverb modifiers"), ("dep:prep", "prepositions heading a phrase"))
    + _c("spacy", "sentences", ("sent:start", "first words of sentences"),
         ("sent:end", "last tokens of sentences"))
    + _c("spacy", "web", ("lex:url", "URLs"), ("lex:email", "e-mail addresses"))
)

TEXT = (
    _c("text", "capitalisation", ("cap:initial", "capitalised words"),
       ("cap:all", "all-caps words"))
    + _c("text", "numbers", ("num:digits", "digits"))
    + _c("text", "word pieces", ("piece:start", "starts of words"),
         ("piece:cont", "word continuations (subword pieces)"))
    + _c("text", "punctuation", ("p:period", "full stops"), ("p:comma", "commas"),
         ("p:colon", "colons"), ("p:semicolon", "semicolons"), ("p:question", "question marks"),
         ("p:exclaim", "exclamation marks"), ("p:dash", "dashes and hyphens"),
         ("p:slash", "slashes"), ("p:asterisk", "asterisks"), ("p:underscore", "underscores"),
         ("p:operator", "operator symbols (+ = < >)"), ("p:at", "@ signs"), ("p:hash", "# signs"))
    + _c("text", "quotes", ("in:dquote", "text inside double quotes"),
         ("in:squote", "text inside single quotes"), ("p:dquote", "double quote marks"),
         ("p:squote", "single quote marks and apostrophes"), ("in:backtick", "inline code in backticks"),
         ("p:backtick", "backticks"))
    + _c("text", "brackets", ("in:paren", "text inside parentheses"),
         ("in:bracket", "text inside square brackets"), ("in:brace", "text inside curly braces"),
         ("p:open", "opening brackets"), ("p:close", "closing brackets"))
    + _c("text", "layout", ("ws:newline", "line breaks"), ("ws:space", "runs of spaces"),
         ("at:line_start", "first tokens of lines"), ("at:indented", "indented lines"),
         ("at:first", "the first tokens of a text"), ("at:paragraph", "first tokens of paragraphs"))
)

CODE = (
    _c("code", "code", ("code:any", "code"), ("py:name", "identifiers in code"),
       ("py:builtin", "built-in names (print, len, ...)"), ("py:op", "operators in code"),
       ("py:call", "function calls in code"), ("py:attr", "attribute names (after a dot)"),
       ("py:def_name", "names being defined (after def / class)"),
       ("py:comment", "comments in code"), ("py:decorator", "decorators"),
       ("py:prompt", "interpreter prompts (>>>)"))
    + _c("code", "code keywords", ("py:keyword", "Python keywords in code"))
    + _c("code", "string literals", ("py:string", "string literals in code"),
         ("py:docstring", "docstrings"))
    + _c("code", "numbers", ("py:number", "numbers in code"))
)

MARKUP = _c("markup", "markup", ("md:heading", "headings"),
            ("md:underline", "heading underlines (====)"), ("md:list", "list items"),
            ("md:literal", "literal blocks (after ::)"), ("md:role", "reST roles and directives"),
            ("md:grammar", "grammar rules (::=)"))

CONCEPTS: tuple[Concept, ...] = tuple(LINGUISTIC + TEXT + CODE + MARKUP)
KEYS: tuple[str, ...] = tuple(c.key for c in CONCEPTS)
INDEX: dict[str, int] = {k: i for i, k in enumerate(KEYS)}
BY_KEY: dict[str, Concept] = {c.key: c for c in CONCEPTS}
SPACY_KEYS = frozenset(c.key for c in CONCEPTS if c.source == "spacy")

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(
    ["quotes", "negation", "names", "numbers", "code keywords", "string literals"]
    + [c.family for c in CONCEPTS] + ["specific tokens", "line breaks"]))
"""Every family a label can belong to; the first six are the ones the label benchmark counts."""
