"""Scores and pictures: every metric, computed offline with scikit-learn, and the plots that show them."""
