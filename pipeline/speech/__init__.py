"""Speech in: resampling, voice activity detection and cutting a speaker's audio into
utterances. Nothing here knows a platform; ``bots/`` feeds it PCM per speaker."""
