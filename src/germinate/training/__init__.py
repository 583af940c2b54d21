"""Training: schedules, the LR range test, and the learner that runs stages."""
