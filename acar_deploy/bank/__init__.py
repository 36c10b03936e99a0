"""Actor-Context Feature Bank: extraction (`extract`), window lookup (`window`), summary (`info`)."""
