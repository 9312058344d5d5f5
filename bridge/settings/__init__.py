"""Settings: the environment, languages, spoken prompts and the glossary."""
