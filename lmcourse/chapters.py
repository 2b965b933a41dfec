"""Which chapter introduces each module of the package: the order in which the package may be read.

A module imports only :mod:`lmcourse.core` and modules of its own or earlier chapters, never a later one, so
that the package can be read in the book's order and importing one module loads only what it needs
(``tests/test_layering.py`` reads every module's imports and fails on a forward edge). A package's
``__init__`` imports nothing: it names its exports in ``_EXPORTS`` and loads each on first use.

Three modules are the course's tools rather than ideas a chapter builds: :mod:`lmcourse.data` (the corpora),
:mod:`lmcourse.runtime` (device, threads, seeds) and :mod:`lmcourse.zoo` (trained models cached between
chapters). A notebook may use them anywhere; every other name a notebook imports from the package is one that
notebook built on the page first, or one an earlier chapter introduced (``tests/test_notebook_order.py``).
"""

CHAPTER: dict[str, int] = {
    "lmcourse": 0,
    "lmcourse.core": 0,
    "lmcourse.chapters": 0,
    "lmcourse.data": 0,
    "lmcourse.runtime": 0,
    "lmcourse.metrics": 0,
    "lmcourse.tokenizers": 0,
    "lmcourse.tokenizers._io": 0,
    "lmcourse.tokenizers.char": 0,
    "lmcourse.ngram": 1,
    "lmcourse.autodiff": 2,
    "lmcourse.models": 3,
    "lmcourse.models.mlp": 3,
    "lmcourse.train": 3,
    "lmcourse.sampling": 3,
    "lmcourse.bptt": 4,
    "lmcourse.rnn": 4,
    "lmcourse.attention": 6,
    "lmcourse.seq2seq": 6,
    "lmcourse.models.layers": 7,
    "lmcourse.models.gpt": 7,
    "lmcourse.models.encdec": 7,
    "lmcourse.optim": 7,
    "lmcourse.tokenizers.bpe_train": 8,
    "lmcourse.tokenizers.bpe": 8,
    "lmcourse.tokenizers.word": 8,
    "lmcourse.tokenizers.wordpiece": 8,
    "lmcourse.tokenizers.unigram": 8,
    "lmcourse.efficiency": 10,
    "lmcourse.inference": 10,
    "lmcourse.ddp": 11,
    "lmcourse.zoo": 12,
    "lmcourse.ladder": 12,
    "lmcourse.finetune": 13,
    "lmcourse.lora": 13,
}

# Modules that serve every notebook and teach no idea of their own (see the module docstring).
TOOLS: frozenset[str] = frozenset({"lmcourse.data", "lmcourse.runtime", "lmcourse.zoo"})
