"""The conversation: from a viewer's message to the persona's clips.

``turns`` runs the turns (filters, prompt, model stream, sentences, jobs, clips in order);
``filters`` admits chat messages; ``safety`` guards what is spoken; ``memory`` keeps each
viewer's history; ``prompts`` builds the model's messages; ``sentences`` splits the model's
stream; ``text`` checks text before it is spoken; ``timings`` records each turn's stages.
"""
