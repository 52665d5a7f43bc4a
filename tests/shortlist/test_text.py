"""What text of a posting the encoder reads."""

from onet_llm.shortlist.text import BODY_HEAD_CHARACTERS, TEXT_VARIANTS, clean_title, posting_text


def test_clean_title_drops_the_noise_around_a_job_title():
    assert clean_title("Registered Nurse (Night Shift) - Req #12345") == "Registered Nurse"
    assert clean_title("Software Engineer II") == "Software Engineer"
    assert clean_title("Accountant 2026 | Acme Corp") == "Accountant"
    assert clean_title("R-1234") == "R-1234"  # nothing left: the title stays as it was


def test_each_variant_reads_what_its_name_says():
    body = "word " * 200
    texts = {variant: posting_text(" Nurse II ", body, variant) for variant in TEXT_VARIANTS}
    assert texts["title"] == "Nurse II" and texts["clean_title"] == "Nurse"
    assert texts["title_body"] == "Nurse II. " + " ".join(["word"] * 200)
    head = texts["title_body_head"].removeprefix("Nurse II. ")
    assert len(head) == BODY_HEAD_CHARACTERS
    assert texts["clean_title_body_head"].startswith("Nurse. ")


def test_an_empty_body_or_title_leaves_the_other():
    assert posting_text("Nurse", "   ", "title_body_head") == "Nurse"
    assert posting_text("", "Care for patients", "title_body") == "Care for patients"
