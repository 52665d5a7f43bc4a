"""onet-llm: code job postings to O*NET-SOC occupations.

Stage 1 (always on) embeds each posting and shortlists occupations from a FAISS index over
the O*NET 30.1 taxonomy; stage 2 (optional) lets an LLM pick and rank the final labels.
"""

__version__ = "0.1.0"

ONET_ATTRIBUTION = (
    "This product includes information from the O*NET 30.1 Database by the U.S. Department "
    "of Labor, Employment and Training Administration (USDOL/ETA). Used under the CC BY 4.0 "
    "license. O*NET(R) is a trademark of USDOL/ETA."
)
