"""The applications RTRL is known for, each reusable outside the CLI:

- `text`: next-character prediction, one online pass (a compression rate);
- `speech`: spoken digits from a streaming log-mel front end;
- `digits`: 8 x 8 images of handwritten digits read row by row.

`classify` holds what the two sequence classifiers share: the label arrives
on the last step of each sequence, every other step only advances the state.
"""
