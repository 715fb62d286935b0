"""Work on finished runs, outside the DVC DAG: freeze one (`snapshot`), re-score it from its
predictions (`rescore`), choose inside each fold across several (`choice`), and measure the
paper's image-level protocol beside the subject-grouped one (`protocol`)."""
