"""One thin Ray actor class per role; the logic lives in learners/ and rewards/."""
