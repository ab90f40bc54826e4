"""Knowledge distillation: teacher logits to a store, students trained from it."""
