"""Concept annotations of a tokenized text: for every token, which of a fixed catalogue of
concepts hold (part of speech, entity, syntax, quotation, code, markup, position). The concept
explainer labels features with the formula over them that best matches where a feature fires."""
