"""A bot for process-level tests: echoes text; "slow N" sleeps N seconds first; "steps N"
replies, pushes, sleeps N seconds, then replies again."""

import asyncio

from ilinkbot import Bot, filters

bot = Bot()


@bot.message(filters.startswith("slow "))
async def slow(msg, ctx):
    await asyncio.sleep(float(msg.text.split()[1]))
    await msg.reply(f"done {msg.text}")


@bot.message(filters.startswith("steps "))
async def steps(msg, ctx):
    await msg.reply(f"step 1 of {msg.text}")
    await ctx.send(f"step 2 of {msg.text}")
    await asyncio.sleep(float(msg.text.split()[1]))
    await msg.reply(f"done {msg.text}")


@bot.message(filters.text)
async def echo(msg, ctx):
    await msg.reply(f"echo: {msg.text}")
