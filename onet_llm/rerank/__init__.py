"""Stage 2, the LLM rerank, one concern per module: `prompt` (template, candidates, order),
`schema` (the answer's contract), `client` (the `LLMClient` protocol and the OpenAI client with
its transport policy, `transport`, and cost meter, `cost`), `answers` (validate and map back to
codes), `cache` (keys and the protocol the store implements) and `reranker`, which only
orchestrates them."""
