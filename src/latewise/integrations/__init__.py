"""Adapters that plug latewise into LLM frameworks (LlamaIndex, LangChain).

Each subpackage is imported only on demand and needs its framework's extra, e.g.
``pip install 'latewise[langchain]'`` for :mod:`latewise.integrations.langchain`.
"""
