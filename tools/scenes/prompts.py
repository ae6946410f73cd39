"""The task prompts and answers of the default model (spec 2.1, 2.2), as config.json gives them."""

CAPTION_PROMPT = " what does the image describe?"
VE_PROMPT = ' can image and text1 " {premise} " imply text2 " {hypothesis} "?'
VE_PROMPT_WITHOUT_PREMISE = ' does the image describe " {hypothesis} "?'
ANSWERS = {"entailment": " yes", "contradiction": " no", "neutral": " maybe"}


def ve_prompt(premise: str, hypothesis: str) -> str:
    """The encoder text of a VE pair; premise and hypothesis already through pre_caption."""
    return VE_PROMPT.format(premise=premise, hypothesis=hypothesis)
